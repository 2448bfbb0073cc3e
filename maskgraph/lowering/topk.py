"""Top-k as a set, in a few Triton launches, with ties broken toward the lowest index.

``torch.topk`` over a long row (128K scores, k = 13K) takes 13 launches and more time than
the attention over the selected keys. A row of at most SMALL_MAX scores
(Quest's pages of a short context) is selected by one program in registers, by one sort up
to SORT_MAX scores (``select_sorted``), else radix digit by digit (``select_small``): one
launch. For longer rows :mod:`maskgraph.kernels.topk` finds the k-th largest score with one histogram
over the row's own [min, max] range, writes every score above its bin directly, and resolves
the scores inside that bin in one program per row: five launches (four for rows of few
segments, whose write programs find the bin themselves), each reading the row at most once. The result is the same set as
:func:`topk_lowest` (the rule simulate mode uses): the k largest scores,
and among scores equal to the k-th largest, the lowest indices. Registered as the custom
operator ``maskgraph::select_topk`` so that ``torch.compile`` calls it as one opaque kernel.
"""

from __future__ import annotations

import torch

from ..kernels import TOPK, jitted
from ..triton_util import pdl, triton_installed

#: Histogram bins per row: bin 0 is −inf, 1..NB−1 split the row's finite range by value.
#: With the bin chosen in a launch of its own (``select_choose``), 128 was the fastest of 64,
#: 128 and 256 bins on an H100 at B=1.
BINS = 128
#: Most segments (programs) per row aimed for; a segment holds SEG_MIN to SEG_MAX scores
#: (64: 2048 scores per segment at 128K, faster than fewer for many rows, the same for few).
SEGMENTS = 64
SEG_MIN = 1024
SEG_MAX = 16384  # < 2**16: select_write packs two ranks into one int32 scan
#: Candidates ``select_resolve`` holds in registers (more are streamed in blocks of this many).
RESOLVE_BLOCK = 4096
#: Rows with at most RESOLVE_SMALL candidates are resolved in that many lanes, rows with at
#: most RESOLVE_MID in that many (each round's histogram costs in proportion to the lanes).
#: Quest's rows leave 40–200 candidates; Gaussian-like scores (Double Sparsity, PQCache) about
#: 2.3 % of a row at 10 % density.
RESOLVE_SMALL = 512
RESOLVE_MID = 2048
#: Launches of the resolve: 1 (every tier in one launch of ``select_resolve_tiers``, 8 warps),
#: 2 (both lane tiers in that launch, then ``select_resolve`` for the rest) or 3 (a launch per
#: tier, ``select_resolve_lanes`` twice); one launch is the fastest at B=1 on an H100.
RESOLVE_LAUNCHES = 1
#: Rows of at most this many scores are selected by one program each (``select_small``, one
#: launch), longer rows by the launches over segments: one program is faster up to 4096
#: scores, the segments from 8192 on.
SMALL_MAX = 4096
#: Rows of at most this many scores (padded to a power of two) are selected by one sort in
#: registers (``select_sorted``) instead of ``select_small``'s four digit rounds (faster at 512
#: scores, slower at 2048).
SORT_MAX = 512
#: Runs of a prior the kernels drop themselves (``exclude``).
MAX_RUNS = 2
#: int64 fields per row of the selection's state (``maskgraph.kernels.topk.STATE``).
STATE_FIELDS = 5
#: Output slots ``select_choose`` fills per step past a device count.
FILL = 1024
#: Most segments per row for which every ``select_write`` program reads the row's histograms
#: and finds the chosen bin itself (no ``select_choose`` launch); longer rows take that launch
#: (with many segments every write program would read 16–32 KB of histograms).
CHOOSE_IN_WRITE_SEGMENTS = 8


def _kernels():
    names = (
        "select_range",
        "select_hist",
        "select_choose",
        "select_write",
        "select_resolve_lanes",
        "select_resolve",
        "select_resolve_tiers",
    )
    return tuple(jitted(TOPK, name) for name in names)


def segment(n: int) -> int:
    """Scores per program for rows of ``n``: a power of two in [SEG_MIN, SEG_MAX], aiming at
    SEGMENTS programs per row."""
    seg = SEG_MIN
    while seg * SEGMENTS < n and seg < SEG_MAX:
        seg *= 2
    return seg


@torch.library.custom_op("maskgraph::select_topk", mutates_args=())
def select_topk_2d(
    scores: torch.Tensor,
    k: int,
    integer: bool = False,
    count: torch.Tensor | None = None,
    top: int | None = None,
    exclude: list[int] | None = None,
    hist: torch.Tensor | None = None,
    ranges: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (R, N) float32, 1 ≤ k ≤ N -> (values (R, k) float32, indices (R, k) int64): each
    row's k largest, ties toward the lowest index, in no particular order. ``integer``: every
    finite score is an integer (a row spanning at most BINS − 2 then gets one bin per value,
    and the scores tied with the k-th are taken without the resolve step's search).
    ``count``: a 0-d int64 tensor on the scores' device, the number to select read there (a
    share of a static buffer's tokens; nothing read on the host): the first min(count, k)
    slots hold the row's min(count, k) largest, the others −inf (index 0); 0 keeps none.
    ``top`` (with ``integer``): every finite score is an integer in [0, top]; with top ≤ BINS − 2
    each value has its bin without the range pass, and nothing is left to resolve: three
    launches (histogram, choose, write; two where the write chooses) instead of seven.
    ``exclude``: a prior's runs the selection treats as −inf without a masking pass of its
    own, ``[qc, block, K]`` then
    ``lo, hi, slope`` per run (one or two): row r belongs to query q = r mod qc, score i stands
    for keys [i·block, min(i·block + block, K)), and it is dropped when every one of those keys
    lies in some run [lo + slope·q, hi + slope·q) (two runs that meet as one). ``hist``: the
    bounded selection's histograms (R, N / seg, bins) int32 of :func:`bounded_layout`, made by
    the kernel that made the scores (bin 1 + score, bin 0 for −inf and dropped scores): the
    histogram launch is then skipped. ``ranges``: (R, P, 2) int32, contiguous, per row P
    pairs of ordered keys (lo, hi) whose union holds every finite score of the row (written by
    the kernel that made the scores: :func:`~maskgraph.kernels.topk.store_range`): the
    range launch is then skipped (rows of more than SMALL_MAX scores, not bounded)."""
    scores = scores.contiguous()
    rows, n = scores.shape
    if not 1 <= k <= n:
        raise ValueError(f"select_topk: k must be in [1, {n}] for rows of {n} scores, got {k}")
    ex, nex = exclusion_args(exclude)
    if count is not None and (
        count.dim() != 0
        or count.device != scores.device
        or count.is_floating_point()
        or count.is_complex()
        or count.dtype == torch.bool
    ):
        raise ValueError(
            f"select_topk: count must be a 0-d integer tensor on {scores.device}, got shape "
            f"{tuple(count.shape)} {count.dtype} on {count.device}"
        )
    has_count = count is not None
    count = count.to(torch.int64) if has_count else scores
    bounded = integer and is_bounded(top)
    seg = segment(n)
    grid = (rows, -(-n // seg))
    nb = bounded_bins(top) if bounded else BINS
    if hist is not None and (
        not bounded or n <= SMALL_MAX or not _int32_buffer(hist, scores.device, (rows, grid[1], nb))
    ):
        raise ValueError(
            f"select_topk: hist must be a contiguous int32 tensor of shape {(rows, grid[1], nb)} on "
            f"{scores.device}, for a bounded selection (integer scores in [0, top ≤ {BINS - 2}]) of "
            f"rows of more than {SMALL_MAX} scores; got {hist.dtype} {tuple(hist.shape)} on "
            f"{hist.device} (integer={integer}, top={top}, rows of {n})"
        )
    if ranges is not None and not (
        ranges.dim() == 3 and ranges.shape[1] >= 1 and _int32_buffer(ranges, scores.device, (rows, -1, 2))
    ):
        raise ValueError(
            f"select_topk: ranges must be a contiguous int32 tensor of shape ({rows}, P, 2) on "
            f"{scores.device}, got {ranges.dtype} {tuple(ranges.shape)} on {ranges.device}"
        )
    if n <= SMALL_MAX:
        return _select_small(scores, k, count, has_count, ex, nex)
    rng, hist_kernel, choose, write, resolve_lanes, resolve, resolve_tiers = _kernels()
    sp = max(2, 1 << (grid[1] - 1).bit_length())
    warps = 8 if seg >= 4096 else 4
    dev = scores.device
    own_range = ranges is None or bounded
    if own_range:
        ranges = torch.empty(rows, grid[1], 2, device=dev, dtype=torch.int32)
    nrange = ranges.shape[1]
    sr = max(2, 1 << (nrange - 1).bit_length())
    state = torch.empty(rows, STATE_FIELDS, device=dev, dtype=torch.int64)
    histograms = hist if hist is not None else torch.empty(rows, grid[1], nb, device=dev, dtype=torch.int32)
    offsets = torch.empty(rows, grid[1], 2, device=dev, dtype=torch.int32)
    candidates = torch.empty(rows, n, device=dev, dtype=torch.int32)
    candidate_scores = torch.empty(rows, n, device=dev, dtype=torch.float32)
    values = torch.empty(rows, k, device=dev, dtype=torch.float32)
    indices = torch.empty(rows, k, device=dev, dtype=torch.int64)
    wide, per_row = pdl(scores.device, rows * grid[1]), pdl(scores.device, rows)
    if own_range and not bounded:
        rng[grid](scores, ranges, n, n, *ex, SEG=seg, NEX=nex, num_warps=warps, **wide)
    if hist is None:
        hist_kernel[grid](
            scores, ranges, histograms, n, n, nrange, *ex,
            SEG=seg, NB=nb, SR=sr, INTEGER=integer, BOUNDED=bounded, NEX=nex, num_warps=warps, **wide,
        )  # fmt: skip
    # few segments: each write program finds the bin itself (one launch less); many: the
    # histograms each program would read grow with them (select_choose reads them once per row)
    apart = grid[1] > CHOOSE_IN_WRITE_SEGMENTS
    if apart:
        choose[(rows,)](
            ranges, state, histograms, offsets, values, indices, count, grid[1], k, nrange,
            SP=sp, NB=nb, INTEGER=integer, HAS_COUNT=has_count, FILL=FILL, SR=sr, BOUNDED=bounded,
            num_warps=8, **per_row,
        )  # fmt: skip
    write[grid](
        scores, ranges, state, offsets, values, indices, candidates, candidate_scores, histograms, count,
        n, k, n, nrange, *ex,
        SEG=seg, NB=nb, INTEGER=integer, SP=sp, SR=sr, BOUNDED=bounded, NEX=nex, CHOOSE=not apart,
        HAS_COUNT=has_count, num_warps=warps, **wide,
    )  # fmt: skip
    if bounded:  # one value per bin: select_write took the ties, no candidate is left
        return values, indices
    resolving = (state, values, indices, candidates, candidate_scores, k, n)
    if RESOLVE_LAUNCHES == 3:
        resolve_lanes[(rows,)](*resolving, LOW=0, LANES=RESOLVE_SMALL, num_warps=4, **per_row)
        resolve_lanes[(rows,)](*resolving, LOW=RESOLVE_SMALL, LANES=RESOLVE_MID, num_warps=8, **per_row)
    else:
        resolve_tiers[(rows,)](
            *resolving, SMALL=RESOLVE_SMALL, MID=RESOLVE_MID, BLOCK=RESOLVE_BLOCK, REST=RESOLVE_LAUNCHES == 1,
            num_warps=8, **per_row,
        )  # fmt: skip
    if RESOLVE_LAUNCHES != 1:
        resolve[(rows,)](*resolving, SMALL=RESOLVE_MID, BLOCK=RESOLVE_BLOCK, num_warps=8, **per_row)
    return values, indices


def _int32_buffer(t: torch.Tensor, device: torch.device, shape: tuple[int, ...]) -> bool:
    """Whether ``t`` is a contiguous int32 tensor on ``device`` of ``shape`` (−1: any size)."""
    return (
        t.dim() == len(shape)
        and all(want in (-1, got) for want, got in zip(shape, t.shape))
        and t.dtype == torch.int32
        and t.device == device
        and t.is_contiguous()
    )


def is_bounded(top: int | None) -> bool:
    """Whether integer scores promised in [0, top] take the bounded selection (one bin each)."""
    return top is not None and 0 <= top <= BINS - 2


def bounded_bins(top: int) -> int:
    """Bins of a bounded selection of integers in [0, top]: −inf and each value its own, rounded
    up to a power of two (≥ 16; Triton's histogram costs grow with the bins)."""
    return max(16, 1 << (top + 1).bit_length())


def bounded_layout(n: int, top: int | None) -> tuple[int, int] | None:
    """(segment, bins) of the bounded selection over rows of ``n`` integer scores in [0, top],
    for a kernel that writes its histograms (``hist`` of :func:`select_topk_2d`); None where
    the selection takes another path (short rows, no or too wide a bound)."""
    if not is_bounded(top) or n <= SMALL_MAX:
        return None
    return segment(n), bounded_bins(top)


def exclusion_args(exclude: list[int] | None) -> tuple[tuple[int, ...], int]:
    """(the nine scalars the kernels take, run count) of :func:`select_topk_2d`'s ``exclude``."""
    if not exclude:
        return (1, 1, 1, 0, 0, 0, 0, 0, 0), 0
    runs = list(exclude[3:])
    if len(runs) % 3 or not 1 <= len(runs) // 3 <= MAX_RUNS:
        raise ValueError(
            f"select_topk: exclude must be [qc, block, K] then lo, hi, slope for 1 to {MAX_RUNS} "
            f"runs, got {len(exclude)} numbers"
        )
    nex = len(runs) // 3
    qc, block, keys = exclude[:3]
    if qc < 1 or block < 1 or not 0 < keys < 2**31 - block:
        raise ValueError(
            f"select_topk: exclude needs qc ≥ 1, block ≥ 1 and 0 < K < 2**31 − block, got qc={qc}, "
            f"block={block}, K={keys}"
        )
    return (*exclude[:3], *runs, *([0] * (3 * (MAX_RUNS - nex)))), nex


def _select_small(
    scores: torch.Tensor, k: int, count: torch.Tensor, has_count: bool, ex: tuple, nex: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of n ≤ SMALL_MAX scores: one program per row, one launch."""
    rows, n = scores.shape
    block = max(16, 1 << (n - 1).bit_length())
    values = torch.empty(rows, k, device=scores.device, dtype=torch.float32)
    indices = torch.empty(rows, k, device=scores.device, dtype=torch.int64)
    # at 512 scores fewer than 4 warps are slower, and 8 no faster
    warps = 4 if block <= 1024 else 8 if block <= 8192 else 16
    kernel = "select_sorted" if block <= SORT_MAX else "select_small"
    jitted(TOPK, kernel)[(rows,)](
        scores, values, indices, count, n, k, n, *ex,
        BLOCK=block, HAS_COUNT=has_count, NEX=nex, num_warps=warps, **pdl(scores.device, rows),
    )  # fmt: skip
    return values, indices


@select_topk_2d.register_fake
def _(scores: torch.Tensor, k: int, *_options) -> tuple[torch.Tensor, torch.Tensor]:
    rows = scores.shape[0]
    return scores.new_empty(rows, k), scores.new_empty(rows, k, dtype=torch.int64)


def select_topk(
    scores: torch.Tensor,
    k,
    integer: bool = False,
    count: torch.Tensor | None = None,
    top: int | None = None,
    exclude: list[int] | None = None,
    hist: torch.Tensor | None = None,
    ranges: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of float32 scores (…, N) along the last dimension by :mod:`maskgraph.kernels.topk`:
    (values, indices) of shape (…, k), the set of :func:`topk_lowest`.
    ``integer``: every finite score is an integer (faster; wrong sets otherwise). ``count``:
    select min(count, k) read on the device, −inf in the other slots; ``top``: with
    ``integer``, every finite score is in [0, top]; ``exclude``: runs of keys to drop;
    ``hist``: the bounded selection's histograms, made with the scores; ``ranges``: bounds of
    the scores, made with them (see :func:`select_topk_2d`; (…, P, 2) here)."""
    lead = scores.shape[:-1]
    flat = scores.reshape(-1, scores.shape[-1]).float()
    if ranges is not None and ranges.dim() > 3:
        ranges = ranges.flatten(0, -3)
    values, indices = select_topk_2d(flat, k, integer, count, top, exclude, hist, ranges)
    return values.view(*lead, k), indices.view(*lead, k)


# ----- the top-k rule in torch (simulate mode's, and sparse mode's without Triton) ----------------
def topk_lowest(
    scores: torch.Tensor,
    k,
    triton: bool | None = None,
    integer: bool = False,
    count: torch.Tensor | None = None,
    top: int | None = None,
    exclude: list[int] | None = None,
    hist: torch.Tensor | None = None,
    ranges: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest of float32 ``scores`` (…, N) along the last dimension, ties toward the
    lowest index: (values, indices) of shape (…, k) in no promised order, and the same set on
    every device and in every mode (``torch.topk`` alone may pick any of the scores tied with
    the k-th largest).

    ``triton`` None (default): on CUDA with Triton installed,
    :func:`select_topk` (four launches, faster than the torch rule on
    a GPU); False: always one ``torch.topk`` over int64 keys that
    are all distinct (:func:`order_keys`: the score's bits in float order, then the lower
    index); True: always the Triton selection (``integer``: every finite score is an integer,
    which lets it skip its search). Both count −0.0 as +0.0 and NaN as −inf (never
    preferred), and return the values so counted.

    ``count``: a 0-d integer tensor (a share of a static buffer's tokens, known on the device
    only; past k keeps all k): only the ``count`` entries the rule ranks first keep their
    values, the others read −inf (the Triton selection takes the count itself; the torch rule cuts its k by one
    sort, :func:`keep_count`). ``top`` (with ``integer``): every finite score lies in [0, top]
    (the Triton selection then skips its range pass and its resolve step). ``exclude``: runs of
    keys the Triton selection drops itself, ``hist``: its histograms made with the scores
    (:func:`select_topk_2d`); only with it. ``ranges``: bounds of the
    scores made with them, which spare the Triton selection its range pass (the same set
    either way; the torch rule has no use for them)."""
    if triton is None:
        triton = scores.is_cuda and triton_installed()
    if triton and k > 0:
        return select_topk(scores, k, integer, count, top, exclude, hist, ranges)
    if exclude or hist is not None:
        raise ValueError(
            "topk_lowest: exclude and hist are taken by the Triton selection only (triton=True, k > 0)"
        )
    s = canonical_scores(scores)
    index = torch.arange(scores.shape[-1], device=scores.device)
    idx = torch.topk(order_keys(s, index), k, dim=-1, sorted=False).indices
    values = torch.gather(s, -1, idx)
    return (values, idx) if count is None else (keep_count(values, idx, count), idx)


def keep_count(values: torch.Tensor, idx: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Canonical ``values`` (…, k) at ``idx`` with −inf on all but the ``count`` (a 0-d
    tensor; past k keeps all k) entries the top-k rule ranks first: one sort of their order
    keys, the count-th as the threshold."""
    keys = order_keys(values, idx)
    ranked = torch.sort(keys, dim=-1, descending=True).values
    at = (
        (count.clamp(max=keys.shape[-1]) - 1)
        .clamp(min=0)
        .view(*([1] * keys.dim()))
        .expand(*keys.shape[:-1], 1)
    )
    keep = (keys >= torch.gather(ranked, -1, at)) & (count > 0)
    return values.masked_fill(~keep, float("-inf"))


def canonical_scores(scores: torch.Tensor) -> torch.Tensor:
    """float32 ``scores`` with −0.0 as +0.0 and NaN as −inf (how the top-k rule counts them)."""
    s = scores.float()
    return torch.where(s == 0, 0.0, torch.where(s != s, float("-inf"), s))


def order_keys(scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Distinct int64 keys in the top-k rule's order, larger = taken first: the bits of the
    canonical float32 ``scores`` in float order (high half), then 2**32 − 1 − ``index`` (low
    half, so the lower index wins a tie). ``index`` broadcasts to ``scores``, values < 2**32."""
    bits = scores.contiguous().view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    return ordered * (1 << 32) + ((1 << 32) - 1 - index.to(torch.int64))
