"""The Triton kernel of :mod:`maskgraph.sparse.fused` (imported only where Triton is installed).

``gather_decode`` is left undecorated: :func:`maskgraph.sparse.fused._kernel` jits it on first
use, so that a test can choose Triton's interpreter first. ``UPCAST`` runs the products in
float32: only for the interpreter, whose bf16 ``tl.dot`` returns garbage (Triton 3.9).
"""

import triton
import triton.language as tl

from ..pdl_kernel import enter


def gather_decode(
    Q, K, V, IDX, VALS, AM, ACC, M, L,
    scale, n, blocks_per_split, n_keys,
    sqb, sqh, sqq, skb, skh, skk, svb, svh, svk, sib, sih, siq, svlb, svlh, svlq,
    sab, sah, saq, sak,
    hsel, qc, hkv, g_heads, d_real,
    r0s, r0n, r0lo, r0hi, r0sl, r1s, r1n, r1lo, r1hi, r1sl,
    HAS_AM: tl.constexpr, UPCAST: tl.constexpr, GP: tl.constexpr, BLOCK: tl.constexpr,
    DP: tl.constexpr, NR: tl.constexpr = 0, PAGE: tl.constexpr = 1, HAS_VALS: tl.constexpr = False,
    PDL: tl.constexpr = False,
):  # fmt: skip
    """One program per (row, split): online softmax over its piece of the row's keys (see
    :func:`_keys` for what the n virtual entries of a row are)."""
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
        idx, valid = _keys(
            IDX + b * sib + hs * sih + qi * siq, VALS + b * svlb + hs * svlh + qi * svlq, offs, n,
            n_keys, qi, r0s, r0n, r0lo, r0hi, r0sl, r1s, r1n, r1lo, r1hi, r1sl, NR, PAGE, HAS_VALS,
        )  # fmt: skip
        # masked lanes are never read, whatever they hold: no select (tl.where(valid, idx, 0)
        # here broke Triton 3.6's layout pass on sm_90 once the validity came from VALS)
        rows = idx
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


@triton.jit
def _in_run(j, lo, hi, slope, qi):
    """Whether key j lies in query qi's run lo + slope·qi ≤ j < hi + slope·qi."""
    shift = slope * qi
    return (j >= lo + shift) & (j < hi + shift)


@triton.jit
def _keys(
    IDX, VALS, offs, n, n_keys, qi, r0s, r0n, r0lo, r0hi, r0sl, r1s, r1n, r1lo, r1hi, r1sl,
    NR: tl.constexpr, PAGE: tl.constexpr, HAS_VALS: tl.constexpr,
):  # fmt: skip
    """(key positions int64, valid) of a row's virtual entries ``offs`` out of n: the first
    r0n are the run r0s … r0s + r0n − 1, the next r1n the run r1s …, (NR of those runs), then
    the listed entries, PAGE keys each: entry e covers IDX[e]·PAGE … IDX[e]·PAGE + PAGE − 1,
    kept where VALS[e] > −inf (IDX[e] ≥ 0 without HAS_VALS). A run's key is valid inside its
    (lo, hi, slope) run and outside the runs before it; a listed key below n_keys and outside
    every run."""
    before = 0
    if NR >= 1:
        before += r0n
    if NR >= 2:
        before += r1n
    o = offs - before
    listed = (o >= 0) & (offs < n)
    e = o // PAGE
    idx = tl.load(IDX + e, mask=listed, other=-1).to(tl.int64)
    if HAS_VALS:
        kept = listed & (tl.load(VALS + e, mask=listed, other=float("-inf")) > float("-inf"))
    else:
        kept = listed & (idx >= 0)
    if PAGE == 1:
        j = idx
    else:
        j = idx * PAGE + o % PAGE
        kept = kept & (j < n_keys)
    if NR >= 1:
        kept = kept & ~_in_run(j, r0lo, r0hi, r0sl, qi)
        in0 = offs < r0n
        j0 = (r0s + offs).to(tl.int64)
        j = tl.where(in0, j0, j)
        kept = tl.where(in0, _in_run(j0, r0lo, r0hi, r0sl, qi), kept)
    if NR >= 2:
        o1 = offs - r0n
        in1 = (o1 >= 0) & (o1 < r1n)
        j1 = (r1s + o1).to(tl.int64)
        ok1 = _in_run(j1, r1lo, r1hi, r1sl, qi) & ~_in_run(j1, r0lo, r0hi, r0sl, qi)
        kept = kept & ~(listed & _in_run(j, r1lo, r1hi, r1sl, qi))
        j = tl.where(in1, j1, j)
        kept = tl.where(in1, ok1, kept)
    return j, kept


#: A decode's runs move with its position: no specialisation on their values.
gather_decode.do_not_specialize = ("r0s", "r0n", "r0lo", "r0hi", "r1s", "r1n", "r1lo", "r1hi")


def merge_splits(
    ACC, M, L, SINKS, OUT, EMPTY,
    splits, g_heads, hsel, qc, d_real,
    sob, soh, soq,
    HAS_SINKS: tl.constexpr, BLOCK_S: tl.constexpr, DP: tl.constexpr, PDL: tl.constexpr = False,
):  # fmt: skip
    """One program per (row, query head of the group) and DP channels of the head (the
    launch's second axis): merge the splits' (max, sum, acc)."""
    enter(PDL)
    pid = tl.program_id(0)
    row = pid // g_heads
    gi = pid % g_heads
    qi = row % qc
    hs = (row // qc) % hsel
    b = (row // (qc * hsel)).to(tl.int64)
    hq = hs * g_heads + gi
    d = tl.program_id(1) * DP + tl.arange(0, DP)
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
    if (top == float("-inf")) & (tl.program_id(1) == 0):
        tl.atomic_add(EMPTY, 1)
    use = tl.where(top == float("-inf"), 0.0, top)
    if HAS_SINKS:
        sink = tl.load(SINKS + hq).to(tl.float32)
        both = tl.maximum(use, sink)
        total = total * tl.exp(use - both) + tl.exp(sink - both)
        out = out * tl.exp(use - both)
    out = out / tl.maximum(total, 1.1754943508222875e-38)
    tl.store(OUT + b * sob + hq * soh + qi * soq + d, out.to(OUT.dtype.element_ty), mask=dmask)
