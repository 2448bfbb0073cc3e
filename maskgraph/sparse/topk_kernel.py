"""Triton kernels of :mod:`maskgraph.sparse.topk` (imported only where Triton is installed).

Scores become signed int32 keys in the order of the floats; the k-th largest key of each row
is found one byte at a time, from the top (four histogram passes, each followed by a one-block
step that picks the byte), then every key above it and enough keys equal to it are written
out. Left undecorated: :func:`maskgraph.sparse.topk._kernels` jits them on first use.

State per row (int32): ``hist`` 256 counters, then ``prefix`` (the bytes chosen so far, in
the unsigned order, i.e. the key with its sign bit flipped) and ``taken`` (how many keys are
known to lie above the prefix), then two output counters.
"""

import triton
import triton.language as tl

STATE = 260  # 256 counters, prefix, taken, above-counter, equal-counter


@triton.jit
def _ordered(x):
    """float32 -> int32 in the same order (flip the magnitude bits of negative numbers)."""
    b = x.to(tl.int32, bitcast=True)
    return tl.where(b < 0, b ^ 0x7FFFFFFF, b)


def radix_histogram(S, STATE_PTR, n, stride, shift, BLOCK: tl.constexpr, FIRST: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    key = _ordered(tl.load(S + row * stride + offs, mask=inside, other=0.0))
    unsigned = key ^ -2147483648
    digit = (unsigned >> shift) & 255
    if FIRST:
        match = inside
    else:
        prefix = tl.load(STATE_PTR + row * 260 + 256)
        match = inside & (((unsigned ^ prefix) >> (shift + 8)) == 0)
    digit = tl.where(match, digit, 256)
    counts = tl.histogram(digit, 512)
    bins = tl.arange(0, 512)
    tl.atomic_add(STATE_PTR + row * 260 + bins, counts, mask=bins < 256)


def radix_choose(STATE_PTR, k, shift):
    """One program per row: the byte at ``shift`` of the k-th largest key; clears the counters."""
    row = tl.program_id(0)
    base = STATE_PTR + row * 260
    bins = tl.arange(0, 256)
    hist = tl.load(base + bins)
    taken = tl.load(base + 257)
    need = k - taken
    above = tl.sum(hist, 0) - tl.cumsum(hist, 0)  # keys in bins above each bin
    # the chosen bin: the highest whose count from the top reaches ``need``
    ok = (above + hist) >= need
    chosen = tl.max(tl.where(ok, bins, -1), 0)
    above_chosen = tl.sum(tl.where(bins > chosen, hist, 0), 0)
    prefix = tl.load(base + 256)
    tl.store(base + 256, prefix | (chosen << shift))
    tl.store(base + 257, taken + above_chosen)
    tl.store(base + bins, tl.zeros((256,), tl.int32))


def radix_gather(S, STATE_PTR, VALS, IDX, n, k, stride, BLOCK: tl.constexpr):
    """Write every key above the threshold and the first ``k − taken`` equal to it."""
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    x = tl.load(S + row * stride + offs, mask=inside, other=0.0)
    key = _ordered(x)
    base = STATE_PTR + row * 260
    threshold = tl.load(base + 256) ^ -2147483648
    taken = tl.load(base + 257)
    above = inside & (key > threshold)
    equal = inside & (key == threshold)
    n_above = tl.sum(above.to(tl.int32), 0)
    n_equal = tl.sum(equal.to(tl.int32), 0)
    first_above = tl.atomic_add(base + 258, n_above)
    first_equal = tl.atomic_add(base + 259, n_equal)
    at_above = first_above + tl.cumsum(above.to(tl.int32), 0) - 1
    at_equal = taken + first_equal + tl.cumsum(equal.to(tl.int32), 0) - 1
    at = tl.where(above, at_above, at_equal)
    write = above | (equal & (at_equal < k))
    tl.store(VALS + row * k + at, x, mask=write)
    tl.store(IDX + row * k + at, offs.to(tl.int64), mask=write)
