"""The Triton kernel of :mod:`maskgraph.sparse.fused` (imported only where Triton is installed).

``gather_decode`` is left undecorated: :func:`maskgraph.sparse.fused._kernel` jits it on first
use, so that a test can choose Triton's interpreter first. ``UPCAST`` runs the products in
float32: only for the interpreter, whose bf16 ``tl.dot`` returns garbage (Triton 3.9).
"""

import triton.language as tl

from ..pdl_kernel import enter


def gather_decode(
    Q,
    K,
    V,
    IDX,
    AM,
    ACC,
    M,
    L,
    scale,
    n,
    blocks_per_split,
    sqb,
    sqh,
    sqq,
    skb,
    skh,
    skk,
    svb,
    svh,
    svk,
    sib,
    sih,
    siq,
    sab,
    sah,
    saq,
    sak,
    hsel,
    qc,
    hkv,
    g_heads,
    d_real,
    HAS_AM: tl.constexpr,
    UPCAST: tl.constexpr,
    GP: tl.constexpr,
    BLOCK: tl.constexpr,
    DP: tl.constexpr,
    PDL: tl.constexpr = False,
):
    enter(PDL)
    row = tl.program_id(0)
    split = tl.program_id(1)
    splits = tl.num_programs(1)
    qi = row % qc
    hs = (row // qc) % hsel
    # 64-bit offsets: b·(Hkv·K·D) passes 2**31 at B=8, K=512K (an illegal access on the H100, run 12)
    b = (row // (qc * hsel)).to(tl.int64)
    kvh = (hs * hkv // hsel).to(tl.int64)
    g = tl.arange(0, GP)
    hq = hs * g_heads + g
    gmask = g < g_heads
    d = tl.arange(0, DP)
    dmask = d < d_real
    q = tl.load(
        Q + b * sqb + hq[:, None] * sqh + qi * sqq + d[None, :],
        mask=gmask[:, None] & dmask[None, :],
        other=0.0,
    )
    if UPCAST:
        q = q.to(tl.float32)
    m = tl.full((GP,), float("-inf"), tl.float32)
    den = tl.zeros((GP,), tl.float32)
    acc = tl.zeros((GP, DP), tl.float32)
    first = split * blocks_per_split * BLOCK
    for blk in range(0, blocks_per_split):
        offs = first + blk * BLOCK + tl.arange(0, BLOCK)
        idx = tl.load(IDX + b * sib + hs * sih + qi * siq + offs, mask=offs < n, other=-1)
        valid = idx >= 0
        rows = tl.where(valid, idx, 0).to(tl.int64)
        k = tl.load(
            K + b * skb + kvh * skh + rows[:, None] * skk + d[None, :],
            mask=valid[:, None] & dmask[None, :],
            other=0.0,
        )
        if UPCAST:
            k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k)) * scale
        if HAS_AM:
            am = tl.load(
                AM + b * sab + hq[:, None] * sah + qi * saq + rows[None, :] * sak,
                mask=gmask[:, None] & valid[None, :],
                other=0.0,
            )
            s += am.to(tl.float32)
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m - m_use)
        p = tl.exp(s - m_use[:, None])
        den = den * alpha + tl.sum(p, 1)
        v = tl.load(
            V + b * svb + kvh * svh + rows[:, None] * svk + d[None, :],
            mask=valid[:, None] & dmask[None, :],
            other=0.0,
        )
        if UPCAST:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32))
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new
    out = (row * splits + split) * g_heads + g
    tl.store(M + out, m, mask=gmask)
    tl.store(L + out, den, mask=gmask)
    tl.store(ACC + out[:, None] * d_real + d[None, :], acc, mask=gmask[:, None] & dmask[None, :])


def merge_splits(
    ACC, M, L, SINKS, OUT, EMPTY,
    splits, g_heads, hsel, qc, d_real,
    sob, soh, soq,
    HAS_SINKS: tl.constexpr, BLOCK_S: tl.constexpr, DP: tl.constexpr, PDL: tl.constexpr = False,
):  # fmt: skip
    """One program per (row, query head of the group): merge the splits' (max, sum, acc)."""
    enter(PDL)
    pid = tl.program_id(0)
    row = pid // g_heads
    gi = pid % g_heads
    qi = row % qc
    hs = (row // qc) % hsel
    b = (row // (qc * hsel)).to(tl.int64)
    hq = hs * g_heads + gi
    d = tl.arange(0, DP)
    dmask = d < d_real
    top = float("-inf")
    total = 0.0
    out = tl.zeros((DP,), tl.float32)
    for first in range(0, splits, BLOCK_S):
        s = first + tl.arange(0, BLOCK_S)
        smask = s < splits
        at = (row * splits + s) * g_heads + gi
        m = tl.load(M + at, mask=smask, other=float("-inf"))
        new_top = tl.maximum(top, tl.max(m, 0))
        use = tl.where(new_top == float("-inf"), 0.0, new_top)
        w = tl.exp(m - use)
        den = tl.load(L + at, mask=smask, other=0.0)
        acc = tl.load(
            ACC + at[:, None] * d_real + d[None, :], mask=smask[:, None] & dmask[None, :], other=0.0
        )
        keep = tl.exp(top - use)
        total = total * keep + tl.sum(w * den, 0)
        out = out * keep + tl.sum(w[:, None] * acc, 0)
        top = new_top
    if top == float("-inf"):
        tl.atomic_add(EMPTY, 1)
    use = tl.where(top == float("-inf"), 0.0, top)
    if HAS_SINKS:
        sink = tl.load(SINKS + hq).to(tl.float32)
        both = tl.maximum(use, sink)
        total = total * tl.exp(use - both) + tl.exp(sink - both)
        out = out * tl.exp(use - both)
    out = out / tl.maximum(total, 1.1754943508222875e-38)
    tl.store(OUT + b * sob + hq * soh + qi * soq + d, out.to(OUT.dtype.element_ty), mask=dmask)
