"""The Triton kernel of :mod:`maskgraph.sparse.fused` (imported only where Triton is installed).

``gather_decode`` is left undecorated: :func:`maskgraph.kernels.jit_all` jits it, so that a
test can choose Triton's interpreter first. ``UPCAST`` runs the products in
float32: only for the interpreter, whose bf16 ``tl.dot`` returns garbage (Triton 3.9).
"""

import triton
import triton.language as tl

from .pdl import enter


def gather_decode(
    Q, K, V, IDX, VALS, AM, ACC, M, L,
    scale, n, blocks_per_split, n_keys,
    sqb, sqh, sqq, skb, skh, skk, svb, svh, svk, sib, sih, siq, svlb, svlh, svlq,
    sab, sah, saq, sak,
    hsel, qc, hkv, g_heads, d_real,
    r0s, r0n, r0lo, r0hi, r0sl, r1s, r1n, r1lo, r1hi, r1sl,
    HAS_AM: tl.constexpr, UPCAST: tl.constexpr, GP: tl.constexpr, BLOCK: tl.constexpr,
    DP: tl.constexpr, NR: tl.constexpr = 0, PAGE: tl.constexpr = 1, HAS_VALS: tl.constexpr = False,
    WIDE: tl.constexpr = False, ENTRY_ROWS: tl.constexpr = False, PDL: tl.constexpr = False,
):  # fmt: skip
    """One program per (row, split): online softmax over its piece of the row's keys (see
    :func:`_keys` for what the n virtual entries of a row are)."""
    enter(PDL)
    scale = tl.cast(scale, tl.float32)  # inductor passes a Python float as float64
    row = tl.program_id(0)
    split = tl.program_id(1)
    qi = row % qc
    hs = (row // qc) % hsel
    # 64-bit offsets: b·(Hkv·K·D) passes 2**31 at B=8, K=512K (an illegal access otherwise)
    b = (row // (qc * hsel)).to(tl.int64)
    kvh = (hs * hkv // hsel).to(tl.int64)
    q, hq, gmask, d, dmask = _group_queries(Q, b, hs, qi, sqb, sqh, sqq, g_heads, d_real, GP, DP, UPCAST)
    m = tl.full((GP,), float("-inf"), tl.float32)
    den = tl.zeros((GP,), tl.float32)
    acc = tl.zeros((GP, DP), tl.float32)
    m, den, acc = _attend_entries(
        IDX + b * sib + hs * sih + qi * siq, VALS + b * svlb + hs * svlh + qi * svlq,
        split * blocks_per_split * BLOCK, blocks_per_split, n, n_keys,
        r0s, r0n, r0lo, r0hi, r0sl, r1s, r1n, r1lo, r1hi, r1sl,
        q, K, V, AM, m, den, acc, b, kvh, hq, qi, gmask, d, dmask, scale,
        skb, skh, skk, svb, svh, svk, sab, sah, saq, sak, HAS_AM, UPCAST, BLOCK, NR, PAGE, HAS_VALS, WIDE,
        ENTRY_ROWS,
    )  # fmt: skip
    _store_partial(
        ACC, M, L, (row * tl.num_programs(1) + split) * g_heads, m, den, acc, gmask, d, dmask, d_real, GP
    )


@triton.jit
def _group_queries(
    Q, b, hs, qi, sqb, sqh, sqq, g_heads, d_real, GP: tl.constexpr, DP: tl.constexpr, UPCAST: tl.constexpr
):  # fmt: skip
    """The G query heads of selection head ``hs``: (queries (GP, DP), their heads, the heads
    that exist, channels, the channels that exist)."""
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
    return q, hq, gmask, d, dmask


@triton.jit
def _attend(
    q, K, V, AM, rows, valid, m, den, acc, b, kvh, hq, qi, gmask, d, dmask, scale,
    skb, skh, skk, svb, svh, svk, sab, sah, saq, sak, HAS_AM: tl.constexpr, UPCAST: tl.constexpr,
    WIDE: tl.constexpr,
):  # fmt: skip
    """One block of keys ``rows`` int32 (kept where ``valid``) into the online softmax (m, den,
    acc) of the group's queries ``q``: the updated (m, den, acc). ``HAS_AM``: 0 no additive
    mask, 1 one mask row for every head (head stride 0), 2 a row per head. ``WIDE``: a key's
    offset in its (batch, head) slab, rows · skk, may pass 2**31 (64-bit offsets then)."""
    # 32-bit offsets otherwise: 64-bit ones spilled registers at 4 warps (Quest's pages with
    # runs: 216–704 bytes of stack, sm_90)
    if WIDE:
        rows = rows.to(tl.int64)
    # masked lanes are never read, whatever they hold: no select (tl.where(valid, idx, 0)
    # here broke Triton 3.6's layout pass on sm_90 once the validity came from VALS)
    k = tl.load(
        K + b * skb + kvh * skh + rows[:, None] * skk + d[None, :],
        mask=valid[:, None] & dmask[None, :],
        other=0.0,
    )
    if UPCAST:
        k = k.to(tl.float32)
    s = tl.dot(q, tl.trans(k)) * scale
    if HAS_AM == 2:
        am = tl.load(
            AM + b * sab + hq[:, None] * sah + qi * saq + rows[None, :] * sak,
            mask=gmask[:, None] & valid[None, :],
            other=0.0,
        )
        s += am.to(tl.float32)
    elif HAS_AM == 1:  # one row for the group's heads: loaded once, not once a head
        am = tl.load(AM + b * sab + qi * saq + rows * sak, mask=valid, other=0.0)
        s += am.to(tl.float32)[None, :]
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
    return m_new, den, acc


@triton.jit
def _store_partial(ACC, M, L, first, m, den, acc, gmask, d, dmask, d_real, GP: tl.constexpr):
    """A program's (max, sum, acc) for its G heads at entries ``first`` … of M, L and ACC."""
    out = first + tl.arange(0, GP)
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
    NR: tl.constexpr, PAGE: tl.constexpr, HAS_VALS: tl.constexpr, ENTRY_ROWS: tl.constexpr,
):  # fmt: skip
    """(key positions int32, valid) of a row's virtual entries ``offs`` out of n: the first
    r0n are the run r0s … r0s + r0n − 1, the next r1n the run r1s …, (NR of those runs), then
    (from the runs' total rounded up to a multiple of PAGE under ENTRY_ROWS, the lanes between
    never valid) the listed entries, PAGE keys each: entry e covers IDX[e]·PAGE … IDX[e]·PAGE +
    PAGE − 1, kept where VALS[e] > −inf (IDX[e] ≥ 0 without HAS_VALS). A run's key is valid
    inside its (lo, hi, slope) run and outside the runs before it; a listed key below n_keys
    and outside every run. Positions are int32 (n_keys < 2**31)."""
    before = 0
    if NR >= 1:
        before += r0n
    if NR >= 2:
        before += r1n
    start = before
    if ENTRY_ROWS:
        start = (before + PAGE - 1) // PAGE * PAGE
    j, kept = _listed_keys(
        IDX, VALS, offs - start, n - start, n_keys, qi, r0lo, r0hi, r0sl, r1lo, r1hi, r1sl, NR, PAGE, HAS_VALS,
        ENTRY_ROWS,
    )  # fmt: skip
    if NR >= 1:
        in_runs = offs < before
        jr, kr = _run_keys(offs, qi, r0s, r0n, r0lo, r0hi, r0sl, r1s, r1n, r1lo, r1hi, r1sl, NR)
        j = tl.where(in_runs, jr, j)
        kept = tl.where(in_runs, kr, kept)
    return j, kept


@triton.jit
def _listed_keys(
    IDX, VALS, o, n_listed, n_keys, qi, r0lo, r0hi, r0sl, r1lo, r1hi, r1sl,
    NR: tl.constexpr, PAGE: tl.constexpr, HAS_VALS: tl.constexpr, ENTRY_ROWS: tl.constexpr,
):  # fmt: skip
    """(key positions int32, valid) of listed entries ``o`` (keys of the entries, PAGE a
    listed entry; valid for 0 ≤ o < n_listed): see :func:`_keys`. ``ENTRY_ROWS``: o starts at a
    multiple of PAGE, which divides its length (each entry's index and value are then loaded
    once, not once a key)."""
    if ENTRY_ROWS:
        # o is PAGE-aligned: each row of the (entries, PAGE) view is one entry, loaded once
        E: tl.constexpr = o.shape[0] // PAGE
        o2 = tl.reshape(o, (E, PAGE))
        first = tl.min(o2, 1)
        listed = (first >= 0) & (first < n_listed)
        idx = tl.load(IDX + first // PAGE, mask=listed, other=-1).to(tl.int32)
        if HAS_VALS:
            keep = listed & (tl.load(VALS + first // PAGE, mask=listed, other=float("-inf")) > float("-inf"))
        else:
            keep = listed & (idx >= 0)
        j = tl.reshape(idx[:, None] * PAGE + (o2 - first[:, None]), (E * PAGE,))
        kept = tl.reshape(tl.broadcast_to(keep[:, None], (E, PAGE)), (E * PAGE,)) & (j < n_keys)
    else:
        listed = (o >= 0) & (o < n_listed)
        e = o // PAGE
        idx = tl.load(IDX + e, mask=listed, other=-1).to(tl.int32)
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
    if NR >= 2:
        kept = kept & ~_in_run(j, r1lo, r1hi, r1sl, qi)
    return j, kept


@triton.jit
def _run_keys(
    offs, qi, r0s, r0n, r0lo, r0hi, r0sl, r1s, r1n, r1lo, r1hi, r1sl, NR: tl.constexpr
):  # fmt: skip
    """(key positions int32, valid) of run entries ``offs`` (the first r0n of run 0, the next
    r1n of run 1): see :func:`_keys`."""
    j0 = r0s + offs
    kept = (offs < r0n) & _in_run(j0, r0lo, r0hi, r0sl, qi)
    j = j0
    if NR >= 2:
        o1 = offs - r0n
        in1 = (o1 >= 0) & (o1 < r1n)
        j1 = r1s + o1
        ok1 = _in_run(j1, r1lo, r1hi, r1sl, qi) & ~_in_run(j1, r0lo, r0hi, r0sl, qi)
        j = tl.where(in1, j1, j)
        kept = tl.where(in1, ok1, kept)
    return j, kept


@triton.jit
def _attend_entries(
    IDX, VALS, first, blocks, n, n_keys,
    r0s, r0n, r0lo, r0hi, r0sl, r1s, r1n, r1lo, r1hi, r1sl,
    q, K, V, AM, m, den, acc, b, kvh, hq, qi, gmask, d, dmask, scale,
    skb, skh, skk, svb, svh, svk, sab, sah, saq, sak,
    HAS_AM: tl.constexpr, UPCAST: tl.constexpr, BLOCK: tl.constexpr, NR: tl.constexpr,
    PAGE: tl.constexpr, HAS_VALS: tl.constexpr, WIDE: tl.constexpr, ENTRY_ROWS: tl.constexpr = False,
):  # fmt: skip
    """The online softmax (m, den, acc) carried over ``blocks`` blocks of BLOCK of a row's n
    virtual entries from entry ``first`` (a multiple of BLOCK) on (:func:`_keys`; IDX and VALS
    at the row's list)."""
    for blk in range(0, blocks):
        offs = first + blk * BLOCK + tl.arange(0, BLOCK)
        idx, valid = _keys(
            IDX, VALS, offs, n, n_keys, qi, r0s, r0n, r0lo, r0hi, r0sl, r1s, r1n, r1lo, r1hi, r1sl,
            NR, PAGE, HAS_VALS, ENTRY_ROWS,
        )  # fmt: skip
        m, den, acc = _attend(
            q, K, V, AM, idx, valid, m, den, acc, b, kvh, hq, qi, gmask, d, dmask, scale,
            skb, skh, skk, svb, svh, svk, sab, sah, saq, sak, HAS_AM, UPCAST, WIDE,
        )  # fmt: skip
    return m, den, acc


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
