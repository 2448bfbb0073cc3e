"""Triton kernels of :mod:`maskgraph.sparse.topk` (imported only where Triton is installed).

Scores become int32 keys in the order of the floats. Each row is cut into segments of ``SEG``
scores, one program each:

1. ``select_range``: the smallest and largest finite key of the row (atomics into ``state``);
2. ``select_hist``: per segment, a histogram over ``NB`` bins — bin 0 holds −inf, bins
   1..NB−1 split [min, max] into equal key ranges (a power of two wide), so a higher bin
   means a larger score;
3. ``select_write``: every program sums its row's histograms, finds the bin that holds the
   k-th largest score, writes the scores above that bin to the output (in index order, at
   offsets known from the earlier segments' histograms) and the indices of the scores in it
   to a candidate buffer (also in index order);
4. ``select_resolve``: one program per row finds the exact k-th key among the candidates,
   four bits at a time, and writes the candidates above it and, of those equal to it, the
   ones with the lowest indices.

State per row (int64, zeroed before the first launch): ``2**31 − 1 − lo`` and ``hi + 2**31``
(so that both grow from zero under ``atomic_max``; lo/hi are the smallest and largest finite
keys), then what ``select_write`` found: the bin, the count above it and the count in it. Left undecorated:
:func:`maskgraph.sparse.topk._kernels` jits them on first use.
"""

import triton
import triton.language as tl

STATE = 5  # lo, hi, bin, above, candidates
NEG_INF_KEY = -2139095041  # the key of float32 −inf: bitcast 0xFF800000 with the magnitude bits flipped


@triton.jit
def _ordered(x):
    """float32 -> int32 in the same order (flip the magnitude bits of negative numbers)."""
    b = x.to(tl.int32, bitcast=True)
    return tl.where(b < 0, b ^ 0x7FFFFFFF, b)


@triton.jit
def _bins(x, inside, lo, shift, NB: tl.constexpr):
    """Bin of each score: 0 for −inf (and lanes outside the row), else 1 + (key − lo) >> shift."""
    key = _ordered(x).to(tl.int64)
    finite = inside & (x > float("-inf"))
    return tl.where(finite, 1 + ((key - lo) >> shift), 0)


@triton.jit
def _range(STATE_PTR, row):
    """(lo, hi) int64 of the row: its smallest and largest finite key (lo > hi when none)."""
    return 2147483647 - tl.load(STATE_PTR + row * 5), tl.load(STATE_PTR + row * 5 + 1) - 2147483648


@triton.jit
def _shift(lo, hi, NB: tl.constexpr):
    """Smallest shift with (hi − lo) >> shift < NB − 1 (0 when the row has no finite score)."""
    span = tl.maximum(hi - lo, 0)
    s = tl.arange(0, 64).to(tl.int64)
    return tl.sum((((span >> s) >= NB - 1) & (s < 40)).to(tl.int64), 0)


def select_range(S, STATE_PTR, n, stride, SEG: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    lo = tl.full((BLOCK,), 2147483647, tl.int64)
    hi = tl.full((BLOCK,), -2147483648, tl.int64)
    for start in range(0, SEG, BLOCK):
        offs = tl.program_id(1) * SEG + start + tl.arange(0, BLOCK)
        x = tl.load(S + row * stride + offs, mask=offs < n, other=float("-inf"))
        finite = x > float("-inf")
        key = _ordered(x).to(tl.int64)
        lo = tl.minimum(lo, tl.where(finite, key, 2147483647))
        hi = tl.maximum(hi, tl.where(finite, key, -2147483648))
    tl.atomic_max(STATE_PTR + row * 5, 2147483647 - tl.min(lo, 0))
    tl.atomic_max(STATE_PTR + row * 5 + 1, tl.max(hi, 0) + 2147483648)


def select_hist(S, STATE_PTR, HIST, n, stride, SEG: tl.constexpr, BLOCK: tl.constexpr, NB: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(1)
    lo, hi = _range(STATE_PTR, row)
    shift = _shift(lo, hi, NB)
    counts = tl.zeros((NB,), tl.int32)
    for start in range(0, SEG, BLOCK):
        offs = seg * SEG + start + tl.arange(0, BLOCK)
        inside = offs < n
        x = tl.load(S + row * stride + offs, mask=inside, other=float("-inf"))
        counts += tl.histogram(_bins(x, inside, lo, shift, NB).to(tl.int32), NB)
    outside = tl.minimum(tl.maximum((seg + 1) * SEG - n, 0), SEG)  # padding lanes landed in bin 0
    bins = tl.arange(0, NB)
    counts -= tl.where(bins == 0, outside, 0)
    tl.store(HIST + (row * tl.num_programs(1) + seg) * NB + bins, counts)


def select_write(
    S,
    STATE_PTR,
    HIST,
    VALS,
    IDX,
    CAND,
    n,
    k,
    stride,
    SEG: tl.constexpr,
    BLOCK: tl.constexpr,
    NB: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    seg = tl.program_id(1)
    nseg = tl.num_programs(1)
    bins = tl.arange(0, NB)
    total = tl.zeros((NB,), tl.int32)
    before = tl.zeros((NB,), tl.int32)  # the same, over the earlier segments of the row
    for j in range(0, nseg):
        h = tl.load(HIST + (row * nseg + j) * NB + bins)
        total += h
        before += tl.where(j < seg, h, 0)
    above = tl.sum(total, 0) - tl.cumsum(total, 0)  # scores in bins above each bin
    chosen = tl.max(tl.where(above + total >= k, bins, -1), 0)
    above_chosen = tl.sum(tl.where(bins > chosen, total, 0), 0)
    at = tl.sum(tl.where(bins > chosen, before, 0), 0)  # output offset of this segment
    cat = tl.sum(tl.where(bins == chosen, before, 0), 0)  # candidate offset of this segment
    if seg == 0:
        tl.store(STATE_PTR + row * 5 + 2, chosen.to(tl.int64))
        tl.store(STATE_PTR + row * 5 + 3, above_chosen.to(tl.int64))
        tl.store(STATE_PTR + row * 5 + 4, tl.sum(tl.where(bins == chosen, total, 0), 0).to(tl.int64))
    lo, hi = _range(STATE_PTR, row)
    shift = _shift(lo, hi, NB)
    for start in range(0, SEG, BLOCK):
        offs = seg * SEG + start + tl.arange(0, BLOCK)
        inside = offs < n
        x = tl.load(S + row * stride + offs, mask=inside, other=float("-inf"))
        b = _bins(x, inside, lo, shift, NB)
        up = inside & (b > chosen)
        cand = inside & (b == chosen)
        pos = at + tl.cumsum(up.to(tl.int32), 0) - 1
        tl.store(VALS + row * k + pos, x, mask=up)
        tl.store(IDX + row * k + pos, offs.to(tl.int64), mask=up)
        cpos = cat + tl.cumsum(cand.to(tl.int32), 0) - 1
        tl.store(CAND + row * stride + cpos, offs, mask=cand)
        at += tl.sum(up.to(tl.int32), 0)
        cat += tl.sum(cand.to(tl.int32), 0)


def select_resolve(S, STATE_PTR, VALS, IDX, CAND, k, stride, NB: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    lo, hi = _range(STATE_PTR, row)
    shift = _shift(lo, hi, NB)
    chosen = tl.load(STATE_PTR + row * 5 + 2)
    taken = tl.load(STATE_PTR + row * 5 + 3)
    count = tl.load(STATE_PTR + row * 5 + 4)
    need = k - taken  # candidates to take, 1 ≤ need ≤ count
    # the candidates' keys lie in [base, base + 2**bits); narrow that to one key, 4 bits a round
    base = tl.where(chosen == 0, NEG_INF_KEY, lo + ((chosen - 1) << shift))
    bits = tl.where(chosen == 0, 0, shift)
    digits = tl.arange(0, 16)
    while bits > 0:
        width = tl.minimum(bits, 4)
        sub = bits - width
        counts = tl.zeros((16,), tl.int64)
        for start in range(0, count, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            inside = offs < count
            idx = tl.load(CAND + row * stride + offs, mask=inside, other=0)
            key = _ordered(tl.load(S + row * stride + idx, mask=inside, other=0.0)).to(tl.int64)
            inside = inside & (key >= base) & (((key - base) >> bits) == 0)
            digit = (key - base) >> sub
            hit = inside[:, None] & (digit[:, None] == digits[None, :])
            counts += tl.sum(hit.to(tl.int64), 0)
        above = tl.sum(counts, 0) - tl.cumsum(counts, 0)
        d = tl.max(tl.where(above + counts >= need, digits, -1), 0)
        need -= tl.sum(tl.where(digits > d, counts, 0), 0)
        base += d.to(tl.int64) << sub
        bits = sub
    # keys above ``base`` are taken; of those equal to it, the first ``need`` in index order
    ties = need * 0
    at = taken
    for start in range(0, count, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        inside = offs < count
        idx = tl.load(CAND + row * stride + offs, mask=inside, other=0)
        x = tl.load(S + row * stride + idx, mask=inside, other=0.0)
        key = _ordered(x).to(tl.int64)
        equal = inside & (key == base)
        rank = ties + tl.cumsum(equal.to(tl.int64), 0) - 1
        take = inside & ((key > base) | (equal & (rank < need)))
        pos = at + tl.cumsum(take.to(tl.int64), 0) - 1
        tl.store(VALS + row * k + pos, x, mask=take)
        tl.store(IDX + row * k + pos, idx.to(tl.int64), mask=take)
        ties += tl.sum(equal.to(tl.int64), 0)
        at += tl.sum(take.to(tl.int64), 0)
