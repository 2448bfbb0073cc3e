"""Triton kernels of :mod:`maskgraph.lowering.topk` (imported only where Triton is installed).

Each row is cut into segments of ``SEG`` scores, one program each:

1. ``select_range``: the smallest and largest finite score of each segment (as int keys in the
   order of the floats; the later launches reduce them over the row), unless the kernel that
   made the scores wrote such bounds for its blocks (:func:`store_range`);
2. ``select_hist``: per segment, a histogram over ``NB`` bins — bin 0 holds −inf, bins
   1..NB−1 split [min, max] into equal value ranges (in float32, whose rounding keeps the
   order: a higher bin always means a larger score);
3. ``select_choose`` (one program per row): sums the row's histograms, finds the bin holding
   the k-th largest score and, per segment, the offsets its writes start at (for rows of few
   segments ``select_write`` does this itself, per program: ``CHOOSE``);
4. ``select_write``: writes the scores above that bin to the output (in index order) and the
   indices of the scores in that bin to a candidate buffer with their scores (also in index
   order);
5. ``select_resolve_tiers``: one program per row finds the exact k-th key among the
   candidates, five bits at a time over their own key range, and writes the candidates above
   it and, of those equal to it, the ones with the lowest indices. Rows with few candidates
   are narrowed in few lanes, rows with more in more lanes, the others in one block of
   registers or, past one block, streamed from the buffer (the tiers may also be launched
   apart: ``select_resolve_lanes`` twice, then ``select_resolve``).

Few bins keep the histogram cheap (Triton's histogram costs grow with the bin count); the
candidate bin then holds a few per cent of a row of Gaussian-like scores. Scores bunched
into one bin (one huge outlier) still give the exact answer, more slowly.

Per row and segment ``RANGE`` holds (lo, hi) int32 keys (lo > hi when the segment has no finite
score); per row ``STATE`` (int64) what ``select_choose`` (or the write's first program)
found: the bin, the count above it, the count in it, the k selected (≥ 1) and the output
slots kept (``limit``). Nothing needs
zeroing before the first launch.

With ``HAS_COUNT`` the number to select is read from the device (``COUNT``, a 0-d int64
tensor, at most the output's width k): rows select min(count, k) (at least one, so the
search always has a target) and every store of a selected entry is masked to the slots below
the count; the slots from the count on hold −inf (index 0). A count of 0 keeps nothing. Left undecorated:
:func:`maskgraph.kernels.jit_all` jits them.
"""

import triton
import triton.language as tl

from .pdl import enter

STATE = tl.constexpr(5)  # int64 per row: bin, above, candidates, k selected, slots kept


@triton.jit
def _ordered(x):
    """float32 -> int32 in the same order (flip the magnitude bits of negative numbers)."""
    b = x.to(tl.int32, bitcast=True)
    return tl.where(b < 0, b ^ 0x7FFFFFFF, b)


@triton.jit
def _canonical(x):
    """−0.0 -> +0.0 and NaN -> −inf (the rule of :func:`maskgraph.lowering.topk.topk_lowest`)."""
    x = tl.where(x == 0.0, 0.0, x)
    return tl.where(x != x, float("-inf"), x)


@triton.jit
def _unordered(key):
    """The inverse of :func:`_ordered`: int32 key -> float32."""
    key = key.to(tl.int32)
    return tl.where(key < 0, key ^ 0x7FFFFFFF, key).to(tl.float32, bitcast=True)


@triton.jit
def store_range(RANGE, at, x, inside):
    """Store at RANGE + 2·at the (lo, hi) int32 keys of the finite scores among ``x``'s lanes
    ``inside`` (lo > hi where none is): a score kernel's block range, which the selection
    reduces over the row instead of a ``select_range`` launch (any bounds holding every finite
    score of the row serve; ``select_range``'s are the tightest)."""
    x = _canonical(x)
    finite = inside & (x > float("-inf"))
    key = _ordered(x)
    tl.store(RANGE + at * 2, tl.min(tl.where(finite, key, 2147483647), 0))
    tl.store(RANGE + at * 2 + 1, tl.max(tl.where(finite, key, -2147483648), 0))


@triton.jit
def _wanted(COUNT, k, HAS_COUNT: tl.constexpr):
    """(k to select ≥ 1, output slots to keep) for an output of k slots."""
    if HAS_COUNT:
        limit = tl.minimum(tl.maximum(tl.load(COUNT), 0), k).to(tl.int32)
        return tl.maximum(limit, 1), limit
    return k, k


@triton.jit
def _scale(
    RANGE, row, nrange, SR: tl.constexpr, NB: tl.constexpr, INTEGER: tl.constexpr, BOUNDED: tl.constexpr
):
    """(lo, scale, exact) of the row's value bins: bin = 1 + ⌊(x − lo)·scale⌋ in float32, capped
    at NB − 1 (both steps round monotonically, so a higher bin always means a larger score; the
    scale is worked out in float64 and capped below the largest float32, the difference capped
    at it, so that no lane computes 0·inf); ``exact``: one bin per value (INTEGER scores spanning at most NB − 2, whose
    differences float32 holds exactly). ``BOUNDED``: the caller promised integers in [0, NB − 2]:
    bin = 1 + score, RANGE not read."""
    if BOUNDED:
        return tl.full([], 0.0, tl.float32), tl.full([], 1.0, tl.float32), tl.full([], 1, tl.int1)
    parts = tl.arange(0, SR)
    at = RANGE + (row * nrange + parts) * 2
    lo_key = tl.min(tl.load(at, mask=parts < nrange, other=2147483647), 0)
    hi_key = tl.max(tl.load(at + 1, mask=parts < nrange, other=-2147483648), 0)
    some = hi_key >= lo_key  # the row has a finite score
    lo = _unordered(tl.where(some, lo_key, 0))
    hi = _unordered(tl.where(some, hi_key, 0))
    wide = hi > lo
    span = tl.where(wide, hi.to(tl.float64), 1.0) - tl.where(wide, lo.to(tl.float64), 0.0)  # never inf − inf
    scale = tl.minimum(tl.where(wide, (NB - 1) / span, 0.0), 3.0e38)
    if INTEGER:
        exact = tl.where(wide, span, 0.0) <= NB - 2
    else:
        exact = hi < lo  # never
    return lo, tl.where(exact, 1.0, scale).to(tl.float32), exact


@triton.jit
def _bins(x, inside, lo, scale, NB: tl.constexpr):
    """Bin of each score: 0 for −inf (and lanes outside the row), else 1..NB−1 by value."""
    finite = inside & (x > float("-inf"))
    top = x == float("inf")  # with a +inf score the scale is 0: keep +inf in the top bin
    plain = finite & ~top
    # no inf − inf on any lane (lo is finite wherever a plain score exists); the difference
    # may round up to +inf (a row spanning more than the float range): capped at the largest
    # float32 first, so that a zero scale (a row holding +inf) never meets inf
    gap = tl.minimum(tl.where(plain, x, 0.0) - tl.where(plain, lo, 0.0), 3.4e38)
    f = tl.where(top, NB - 2, tl.minimum(gap * scale, NB - 2))
    return tl.where(finite, 1 + f.to(tl.int32), 0)


@triton.jit
def dropped(offs, row, qc, block, num_keys, lo1, hi1, sl1, lo2, hi2, sl2, NEX: tl.constexpr):
    """True where every key of element ``offs`` — keys [offs·block, min(offs·block + block, K))
    — lies in the prior's runs for the row's query q = row mod qc: run i is
    [lo_i + sl_i·q, hi_i + sl_i·q); two runs that meet count as one."""
    q = (row % qc).to(tl.int32)  # 32-bit arithmetic: positions stay below K < 2**31
    p0 = offs * block
    p1 = tl.minimum(p0 + block, num_keys)
    a0 = lo1 + sl1 * q
    a1 = hi1 + sl1 * q
    out = (a0 <= p0) & (p1 <= a1)
    if NEX == 2:
        b0 = lo2 + sl2 * q
        b1 = hi2 + sl2 * q
        meet = (a0 < a1) & (b0 < b1) & (tl.maximum(a0, b0) <= tl.minimum(a1, b1))
        out = out | ((b0 <= p0) & (p1 <= b1))
        out = out | (meet & (tl.minimum(a0, b0) <= p0) & (p1 <= tl.maximum(a1, b1)))
    return out


@triton.jit
def _load_scores(
    S, row, stride, offs, inside, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8, NEX: tl.constexpr
):
    """The row's scores at ``offs`` in the canonical form (−inf outside the row), −inf where
    the prior's runs (``ex*``, see :func:`dropped`; NEX of them, 0 to 2) cover the element."""
    x = _canonical(tl.load(S + row * stride + offs, mask=inside, other=float("-inf")))
    if NEX > 0:
        x = tl.where(dropped(offs, row, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8, NEX), float("-inf"), x)
    return x


def select_range(
    S, RANGE, n, stride, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8,
    SEG: tl.constexpr, NEX: tl.constexpr = 0, PDL: tl.constexpr = False,
):  # fmt: skip
    enter(PDL)
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * SEG + tl.arange(0, SEG)
    x = _load_scores(S, row, stride, offs, offs < n, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8, NEX)
    finite = x > float("-inf")
    key = _ordered(x).to(tl.int64)
    lo = tl.min(tl.where(finite, key, 2147483647), 0)
    hi = tl.max(tl.where(finite, key, -2147483648), 0)
    at = RANGE + (row * tl.num_programs(1) + tl.program_id(1)) * 2
    tl.store(at, lo.to(tl.int32))
    tl.store(at + 1, hi.to(tl.int32))


def select_hist(
    S, RANGE, HIST, n, stride, nrange, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8,
    SEG: tl.constexpr, NB: tl.constexpr, SR: tl.constexpr, INTEGER: tl.constexpr,
    BOUNDED: tl.constexpr = False, NEX: tl.constexpr = 0, PDL: tl.constexpr = False,
):  # fmt: skip
    """A histogram per segment over the row's range (``nrange`` (lo, hi) entries a row in
    RANGE, SR ≥ nrange a power of two)."""
    enter(PDL)
    row = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(1)
    lo, scale, exact = _scale(RANGE, row, nrange, SR, NB, INTEGER, BOUNDED)
    offs = seg * SEG + tl.arange(0, SEG)
    inside = offs < n
    x = _load_scores(S, row, stride, offs, inside, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8, NEX)
    counts = tl.histogram(_bins(x, inside, lo, scale, NB), NB)
    outside = tl.minimum(tl.maximum((seg + 1) * SEG - n, 0), SEG)  # padding lanes landed in bin 0
    bins = tl.arange(0, NB)
    counts -= tl.where(bins == 0, outside, 0)
    tl.store(HIST + (row * tl.num_programs(1) + seg) * NB + bins, counts)


@triton.jit
def _row_histograms(HIST, row, nseg, want, SP: tl.constexpr, NB: tl.constexpr):
    """The row's segment histograms (SP, NB) and the bin holding its want-th largest score:
    (histograms, bins, segments, the row's total per bin, chosen bin)."""
    bins = tl.arange(0, NB)
    segs = tl.arange(0, SP)
    hist = tl.load(
        HIST + (row * nseg + segs[:, None]) * NB + bins[None, :], mask=(segs < nseg)[:, None], other=0
    )
    total = tl.sum(hist, 0)
    above = tl.sum(total, 0) - tl.cumsum(total, 0)  # scores in bins above each bin
    chosen = tl.max(tl.where(above + total >= want, bins, -1), 0)
    return hist, bins, segs, total, chosen


@triton.jit
def _store_state(STATE_PTR, row, chosen, total, bins, exact, want, limit):
    """The row's STATE: chosen bin, scores above it, candidates in it (0 with exact bins), the
    k selected and the slots kept."""
    tl.store(STATE_PTR + row * STATE, chosen.to(tl.int64))
    tl.store(STATE_PTR + row * STATE + 1, tl.sum(tl.where(bins > chosen, total, 0), 0).to(tl.int64))
    in_bin = tl.sum(tl.where(bins == chosen, total, 0), 0)
    tl.store(STATE_PTR + row * STATE + 2, tl.where(exact, 0, in_bin).to(tl.int64))
    tl.store(STATE_PTR + row * STATE + 3, want.to(tl.int64))
    tl.store(STATE_PTR + row * STATE + 4, limit.to(tl.int64))


@triton.jit
def _chosen_here(HIST, row, seg, nseg, want, SP: tl.constexpr, NB: tl.constexpr):
    """From the row's segment histograms: (the bin holding the want-th largest score, the row's
    scores above it, segment ``seg``'s first output slot for its scores above the bin, its
    first candidate slot for its scores in the bin, the row's total per bin, the bins)."""
    hist, bins, segs, total, chosen = _row_histograms(HIST, row, nseg, want, SP, NB)
    before = (segs < seg)[:, None]
    at = tl.sum(tl.sum(tl.where(before & (bins > chosen)[None, :], hist, 0), 1), 0)
    cat = tl.sum(tl.sum(tl.where(before & (bins == chosen)[None, :], hist, 0), 1), 0)
    above = tl.sum(tl.where(bins > chosen, total, 0), 0)
    return chosen, above, at, cat, total, bins


@triton.jit
def _chosen_stored(STATE_PTR, OFFS, row, seg, nseg):
    """What :func:`_chosen_here` finds, as ``select_choose`` stored it: (chosen bin, scores above
    it, k selected, slots kept, the segment's first output slot, its first candidate slot)."""
    chosen = tl.load(STATE_PTR + row * STATE).to(tl.int32)
    above = tl.load(STATE_PTR + row * STATE + 1).to(tl.int32)
    want = tl.load(STATE_PTR + row * STATE + 3).to(tl.int32)
    limit = tl.load(STATE_PTR + row * STATE + 4).to(tl.int32)
    at = tl.load(OFFS + (row * nseg + seg) * 2)
    cat = tl.load(OFFS + (row * nseg + seg) * 2 + 1)
    return chosen, above, want, limit, at, cat


@triton.jit
def _segment_ranks(b, inside, chosen):
    """(lanes above the chosen bin, lanes in it, both ranks in index order packed in one int32:
    above in the low 16 bits, in the bin in the high ones; segments < 2**16)."""
    up = inside & (b > chosen)
    cand = inside & (b == chosen)
    return up, cand, tl.cumsum(up.to(tl.int32) + (cand.to(tl.int32) << 16), 0)


def select_choose(
    RANGE, STATE_PTR, HIST, OFFS, VALS, IDX, COUNT, nseg, k, nrange,
    SP: tl.constexpr, NB: tl.constexpr, INTEGER: tl.constexpr, HAS_COUNT: tl.constexpr, FILL: tl.constexpr,
    SR: tl.constexpr, BOUNDED: tl.constexpr = False, PDL: tl.constexpr = False,
):  # fmt: skip
    """One program per row: sums the row's segment histograms, finds the bin holding the k-th
    largest score and writes the row's STATE and, per segment, where its scores above that bin
    and its scores in it start in the output and in the candidate buffer (OFFS (rows, nseg, 2)
    int32). With exact bins the chosen bin holds one value and no candidate is left to resolve.
    With a count, the output slots from it on are filled here (FILL at a time). (Rows of few
    segments skip this launch: ``select_write`` with CHOOSE does the same per program.)"""
    enter(PDL)
    row = tl.program_id(0).to(tl.int64)
    want, limit = _wanted(COUNT, k, HAS_COUNT)
    if HAS_COUNT:
        for start in range(0, k, FILL):
            slots = start + tl.arange(0, FILL)
            past = (slots >= limit) & (slots < k)
            tl.store(VALS + row * k + slots, tl.full((FILL,), float("-inf"), tl.float32), mask=past)
            tl.store(IDX + row * k + slots, tl.zeros((FILL,), tl.int64), mask=past)
    hist, bins, segs, total, chosen = _row_histograms(HIST, row, nseg, want, SP, NB)
    up = tl.sum(tl.where((bins > chosen)[None, :], hist, 0), 1)  # per segment, above the bin
    cand = tl.sum(tl.where((bins == chosen)[None, :], hist, 0), 1)  # per segment, in the bin
    _, _, exact = _scale(RANGE, row, nrange, SR, NB, INTEGER, BOUNDED)
    _store_state(STATE_PTR, row, chosen, total, bins, exact, want, limit)
    at = OFFS + (row * nseg + segs) * 2
    real = segs < nseg
    tl.store(at, tl.cumsum(up, 0) - up, mask=real)
    tl.store(at + 1, tl.cumsum(cand, 0) - cand, mask=real)


def select_write(
    S, RANGE, STATE_PTR, OFFS, VALS, IDX, CAND, CANDV, HIST, COUNT,
    n, k, stride, nrange, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8,
    SEG: tl.constexpr, NB: tl.constexpr, SP: tl.constexpr, INTEGER: tl.constexpr, SR: tl.constexpr,
    BOUNDED: tl.constexpr = False, NEX: tl.constexpr = 0, CHOOSE: tl.constexpr = False,
    HAS_COUNT: tl.constexpr = False, PDL: tl.constexpr = False,
):  # fmt: skip
    """Writes every score above the chosen bin to the output and the scores in it to the
    candidate buffer (each in index order, from the offsets ``select_choose`` left). With
    exact bins the chosen bin's first ``k − above`` scores in index order go to the output.
    ``CHOOSE``: no ``select_choose`` ran; every program reads the row's histograms (HIST) and
    finds the bin and its own offsets itself, the row's first program writes the STATE, and
    with a count (``HAS_COUNT``, COUNT) each program fills its share of the slots past it."""
    enter(PDL)
    row = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(1)
    nseg = tl.num_programs(1)
    lo, scale, exact = _scale(RANGE, row, nrange, SR, NB, INTEGER, BOUNDED)
    if CHOOSE:
        want, limit = _wanted(COUNT, k, HAS_COUNT)
        chosen, above_chosen, at, cat, total, bins = _chosen_here(HIST, row, seg, nseg, want, SP, NB)
        if seg == 0:
            _store_state(STATE_PTR, row, chosen, total, bins, exact, want, limit)
        if HAS_COUNT:  # slots past the count: this program's share, at most SEG of them
            share = (k + nseg - 1) // nseg
            slots = seg * share + tl.arange(0, SEG)
            past = (slots >= limit) & (slots < k) & (slots < seg * share + share)
            tl.store(VALS + row * k + slots, tl.full((SEG,), float("-inf"), tl.float32), mask=past)
            tl.store(IDX + row * k + slots, tl.zeros((SEG,), tl.int64), mask=past)
    else:
        chosen, above_chosen, want, limit, at, cat = _chosen_stored(STATE_PTR, OFFS, row, seg, nseg)
    offs = seg * SEG + tl.arange(0, SEG)
    inside = offs < n
    x = _load_scores(S, row, stride, offs, inside, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8, NEX)
    up, cand, ranks = _segment_ranks(_bins(x, inside, lo, scale, NB), inside, chosen)
    pos = at + (ranks & 0xFFFF) - 1  # < the count above the bin < want: below the limit
    tl.store(VALS + row * k + pos, x, mask=up)
    tl.store(IDX + row * k + pos, offs.to(tl.int64), mask=up)
    cpos = cat + (ranks >> 16) - 1
    if exact:  # the chosen bin is the k-th score itself: take its lowest indices
        tie = cand & (cpos < want - above_chosen) & (above_chosen + cpos < limit)
        tl.store(VALS + row * k + above_chosen + cpos, x, mask=tie)
        tl.store(IDX + row * k + above_chosen + cpos, offs.to(tl.int64), mask=tie)
    else:
        tl.store(CAND + row * stride + cpos, offs, mask=cand)
        tl.store(CANDV + row * stride + cpos, x, mask=cand)


@triton.jit
def _candidate_keys(CAND, CANDV, row, stride, start, count, BLOCK: tl.constexpr):
    """(index, score, key int64, inside) of candidates start..start+BLOCK of the row."""
    offs = start + tl.arange(0, BLOCK)
    inside = offs < count
    idx = tl.load(CAND + row * stride + offs, mask=inside, other=0)
    x = tl.load(CANDV + row * stride + offs, mask=inside, other=0.0)
    return idx, x, _ordered(x).to(tl.int64), inside


@triton.jit
def _digit_counts(key, inside, base, bits, sub):
    """Counts (64,) of the 5-bit digit ``(key − base) >> sub`` of the keys in [base, base + 2**bits);
    bin 32 takes every other lane."""
    inside = inside & (key >= base) & (((key - base) >> bits) == 0)
    return tl.histogram(tl.where(inside, (key - base) >> sub, 32).to(tl.int32), 64)


@triton.jit
def _narrow(counts, need, base, sub):
    """The digit holding the need-th largest key: (keys still to take at or below it, the base
    with that digit set)."""
    digits = tl.arange(0, 64)
    counts = tl.where(digits < 32, counts, 0).to(tl.int64)
    above = tl.sum(counts, 0) - tl.cumsum(counts, 0)
    d = tl.max(tl.where((above + counts >= need) & (digits < 32), digits, -1), 0)
    need -= tl.sum(tl.where(digits > d, counts, 0), 0)
    return need, base + (d.to(tl.int64) << sub)


@triton.jit
def _bit_length(lo, hi):
    """Bit length of (max hi − min lo) over the lanes, and min lo."""
    base = tl.min(lo, 0)
    s = tl.arange(0, 64).to(tl.int64)
    return tl.sum((((tl.max(hi, 0) - base) >> s) > 0).to(tl.int64), 0), base


@triton.jit
def _take(VALS, IDX, row, k, limit, idx, x, key, inside, base, need, ties, at):
    """Write the lanes above ``base`` and, of those equal to it, the first ``need − ties`` in
    lane order, from output position ``at`` (slots below ``limit`` only); returns the updated
    (ties, at)."""
    equal = inside & (key == base)
    rank = ties + tl.cumsum(equal.to(tl.int64), 0) - 1
    take = inside & ((key > base) | (equal & (rank < need)))
    pos = at + tl.cumsum(take.to(tl.int64), 0) - 1
    kept = take & (pos < limit)
    tl.store(VALS + row * k + pos, x, mask=kept)
    tl.store(IDX + row * k + pos, idx.to(tl.int64), mask=kept)
    return ties + tl.sum(equal.to(tl.int64), 0), at + tl.sum(take.to(tl.int64), 0)


@triton.jit
def _resolve_in_registers(
    VALS, IDX, CAND, CANDV, row, k, limit, stride, count, need, taken, LANES: tl.constexpr
):
    """Read the row's ``count`` ≤ LANES candidates once, narrow them to the exact k-th key five
    bits a round and write the ones taken (every round costs in proportion to LANES)."""
    idx, x, key, inside = _candidate_keys(CAND, CANDV, row, stride, 0, count, LANES)
    bits, base = _bit_length(tl.where(inside, key, 2147483647), tl.where(inside, key, -2147483648))
    while bits > 0:  # narrow to one key, five bits a round
        sub = bits - tl.minimum(bits, 5)
        need, base = _narrow(_digit_counts(key, inside, base, bits, sub), need, base, sub)
        bits = sub
    _take(VALS, IDX, row, k, limit, idx, x, key, inside, base, need, need * 0, taken)


def select_resolve_lanes(
    STATE_PTR, VALS, IDX, CAND, CANDV, k, stride,
    LOW: tl.constexpr, LANES: tl.constexpr, PDL: tl.constexpr = False,
):  # fmt: skip
    """Rows with more than LOW and at most LANES candidates (LOW = 0: none too, with exact
    bins): read once and narrowed in LANES lanes. Every round's histogram costs in proportion
    to the lanes, so few candidates get few lanes; other rows are left to the other launches."""
    enter(PDL)
    row = tl.program_id(0).to(tl.int64)
    count = tl.load(STATE_PTR + row * STATE + 2).to(tl.int32)
    if (count > LOW) & (count <= LANES):
        taken = tl.load(STATE_PTR + row * STATE + 1)
        want = tl.load(STATE_PTR + row * STATE + 3)
        limit = tl.load(STATE_PTR + row * STATE + 4)
        _resolve_in_registers(
            VALS, IDX, CAND, CANDV, row, k, limit, stride, count, want - taken, taken, LANES
        )


def select_resolve(
    STATE_PTR, VALS, IDX, CAND, CANDV, k, stride,
    SMALL: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr = False,
):  # fmt: skip
    """Rows with more than SMALL candidates (``select_resolve_lanes`` took the others): those
    that fit BLOCK lanes are read once and narrowed in registers, more are streamed from the
    buffer in blocks, once per round."""
    enter(PDL)
    row = tl.program_id(0).to(tl.int64)
    count = tl.load(STATE_PTR + row * STATE + 2).to(tl.int32)
    if count > SMALL:
        _resolve_many(STATE_PTR, VALS, IDX, CAND, CANDV, k, stride, row, count, BLOCK)


def select_resolve_tiers(
    STATE_PTR, VALS, IDX, CAND, CANDV, k, stride,
    SMALL: tl.constexpr, MID: tl.constexpr, BLOCK: tl.constexpr, REST: tl.constexpr,
    PDL: tl.constexpr = False,
):  # fmt: skip
    """The resolve tiers in one launch: rows of at most SMALL candidates narrowed in SMALL
    lanes, of at most MID in MID lanes and, with REST, the others as ``select_resolve`` does
    (without REST they are left to it)."""
    enter(PDL)
    row = tl.program_id(0).to(tl.int64)
    count = tl.load(STATE_PTR + row * STATE + 2).to(tl.int32)
    if (count > 0) & (count <= MID):
        taken = tl.load(STATE_PTR + row * STATE + 1)
        need = tl.load(STATE_PTR + row * STATE + 3) - taken
        limit = tl.load(STATE_PTR + row * STATE + 4)
        if count <= SMALL:
            _resolve_in_registers(VALS, IDX, CAND, CANDV, row, k, limit, stride, count, need, taken, SMALL)
        else:
            _resolve_in_registers(VALS, IDX, CAND, CANDV, row, k, limit, stride, count, need, taken, MID)
    elif REST:
        if count > MID:
            _resolve_many(STATE_PTR, VALS, IDX, CAND, CANDV, k, stride, row, count, BLOCK)


@triton.jit
def _resolve_many(STATE_PTR, VALS, IDX, CAND, CANDV, k, stride, row, count, BLOCK: tl.constexpr):
    """A row's candidates in one block of BLOCK registers if they fit, else streamed from the
    buffer in blocks, once per round."""
    taken = tl.load(STATE_PTR + row * STATE + 1)
    need = tl.load(STATE_PTR + row * STATE + 3) - taken  # candidates to take, 1 ≤ need ≤ count
    limit = tl.load(STATE_PTR + row * STATE + 4)
    if count <= BLOCK:
        _resolve_in_registers(VALS, IDX, CAND, CANDV, row, k, limit, stride, count, need, taken, BLOCK)
    else:
        # the candidates' own key range [base, base + 2**bits)
        lo = tl.full((BLOCK,), 2147483647, tl.int64)
        hi = tl.full((BLOCK,), -2147483648, tl.int64)
        for start in range(0, count, BLOCK):
            idx, x, key, inside = _candidate_keys(CAND, CANDV, row, stride, start, count, BLOCK)
            lo = tl.minimum(lo, tl.where(inside, key, 2147483647))
            hi = tl.maximum(hi, tl.where(inside, key, -2147483648))
        bits, base = _bit_length(lo, hi)
        while bits > 0:
            sub = bits - tl.minimum(bits, 5)
            counts = tl.zeros((64,), tl.int32)
            for start in range(0, count, BLOCK):
                idx, x, key, inside = _candidate_keys(CAND, CANDV, row, stride, start, count, BLOCK)
                counts += _digit_counts(key, inside, base, bits, sub)
            need, base = _narrow(counts, need, base, sub)
            bits = sub
        # keys above ``base`` are taken; of those equal to it, the first ``need`` in index order
        ties = need * 0
        at = taken
        for start in range(0, count, BLOCK):
            idx, x, key, inside = _candidate_keys(CAND, CANDV, row, stride, start, count, BLOCK)
            ties, at = _take(VALS, IDX, row, k, limit, idx, x, key, inside, base, need, ties, at)


@triton.jit
def _whole_row(
    S, COUNT, n, k, stride, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8,
    BLOCK: tl.constexpr, HAS_COUNT: tl.constexpr, NEX: tl.constexpr,
):  # fmt: skip
    """(row, k to select, slots to keep, offsets, lanes inside the row, scores) of this
    program's row of n ≤ BLOCK scores, loaded whole."""
    row = tl.program_id(0).to(tl.int64)
    want, limit = _wanted(COUNT, k, HAS_COUNT)
    offs = tl.arange(0, BLOCK)
    inside = offs < n
    x = _load_scores(S, row, stride, offs, inside, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8, NEX)
    return row, want, limit, offs, inside, x


@triton.jit
def _fill_past(VALS, IDX, row, k, offs, limit, BLOCK: tl.constexpr):
    """−inf at index 0 in the row's output slots from ``limit`` to k (a count below k)."""
    past = (offs >= limit) & (offs < k)
    tl.store(VALS + row * k + offs, tl.full((BLOCK,), float("-inf"), tl.float32), mask=past)
    tl.store(IDX + row * k + offs, tl.zeros((BLOCK,), tl.int64), mask=past)


def select_small(
    S, VALS, IDX, COUNT, n, k, stride, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8,
    BLOCK: tl.constexpr, HAS_COUNT: tl.constexpr, NEX: tl.constexpr = 0, PDL: tl.constexpr = False,
):  # fmt: skip
    """One program per row of n ≤ BLOCK scores, held in registers: the exact k-th largest key
    in four rounds of 8-bit radix digits (a 256-bin histogram each, over the keys that share
    the digits found so far), then every key above it and, of the keys equal to it, the lowest
    indices, written in index order (with a count: min(count, k) of them, −inf after)."""
    enter(PDL)
    row, want, limit, offs, inside, x = _whole_row(
        S, COUNT, n, k, stride, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8, BLOCK, HAS_COUNT, NEX
    )
    # unsigned keys in the order of the scores: flip the sign bit of the ordered int32 keys
    ukey = (_ordered(x) ^ -2147483648).to(tl.uint32, bitcast=True)
    bins = tl.arange(0, 256)
    need = want  # keys still to take at or below the prefix found so far
    prefix = tl.zeros((), tl.uint32)
    for r in tl.static_range(4):
        shift = 24 - 8 * r
        if r == 0:
            match = inside
        else:
            match = inside & ((ukey >> (shift + 8)) == (prefix >> (shift + 8)))
        digit = tl.where(match, ((ukey >> shift) & 255).to(tl.int32), 0)
        counts = tl.histogram(digit, 256)
        counts -= tl.where(bins == 0, BLOCK - tl.sum(match.to(tl.int32), 0), 0)  # lanes not matching
        above = tl.sum(counts, 0) - tl.cumsum(counts, 0)  # matching keys with a larger digit
        d = tl.max(tl.where(above + counts >= need, bins, -1), 0)
        need -= tl.sum(tl.where(bins > d, counts, 0), 0)
        prefix = prefix | (d.to(tl.uint32) << shift)
    equal = inside & (ukey == prefix)
    take = (inside & (ukey > prefix)) | (equal & (tl.cumsum(equal.to(tl.int32), 0) <= need))
    pos = tl.cumsum(take.to(tl.int32), 0) - 1
    kept = take & (pos < limit)
    tl.store(VALS + row * k + pos, x, mask=kept)
    tl.store(IDX + row * k + pos, offs.to(tl.int64), mask=kept)
    if HAS_COUNT:
        _fill_past(VALS, IDX, row, k, offs, limit, BLOCK)


def select_sorted(
    S, VALS, IDX, COUNT, n, k, stride, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8,
    BLOCK: tl.constexpr, HAS_COUNT: tl.constexpr, NEX: tl.constexpr = 0, PDL: tl.constexpr = False,
):  # fmt: skip
    """As :func:`select_small` by one sort in registers: each score and its index as one int64
    (the score's ordered key above, BLOCK − 1 − index below, so equal scores put the lowest
    index first), sorted descending; slot p of the output takes the p-th (no digit rounds,
    each a chain of block-wide reductions)."""
    enter(PDL)
    row, _, limit, offs, _, x = _whole_row(
        S, COUNT, n, k, stride, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8, BLOCK, HAS_COUNT, NEX
    )
    packed = (_ordered(x).to(tl.int64) << 32) | (BLOCK - 1 - offs).to(tl.int64)
    ranked = tl.sort(packed, 0, descending=True)
    idx = BLOCK - 1 - (ranked & 0xFFFFFFFF)
    kept = offs < limit
    tl.store(VALS + row * k + offs, _unordered(ranked >> 32), mask=kept)
    tl.store(IDX + row * k + offs, idx, mask=kept)
    if HAS_COUNT:
        _fill_past(VALS, IDX, row, k, offs, limit, BLOCK)


#: The prior's runs move with the decoded position: no specialisation on their values.
EX_ARGS = tuple(f"ex{i}" for i in range(9))
for _kernel in (select_range, select_hist, select_write, select_small, select_sorted):
    _kernel.do_not_specialize = EX_ARGS
