"""Top-k with ties toward the lowest index: the torch rule (simulate mode) against a plain
reference, and the Triton selection (run on the CPU through Triton's interpreter) against it."""

from __future__ import annotations

import pytest
import torch
from launches import record_topk_launches
from references import block_ranges, dropped_by_runs

from maskgraph.lowering.topk import BINS, SEG_MAX, SEG_MIN, SEGMENTS, bounded_bins, segment, select_topk
from maskgraph.ops.select import topk_lowest
from maskgraph.triton_util import interpreting, triton_installed


def counted(s: torch.Tensor) -> torch.Tensor:
    """Scores as top-k counts them: NaN as −inf (−0.0 equals +0.0 anyway)."""
    return torch.where(s.isnan(), float("-inf"), s)


def reference(s: torch.Tensor, k: int) -> set[tuple[int, int]]:
    """(row, index) of each row's k largest, ties toward the lowest index, by a plain sort."""
    rows = counted(s).reshape(-1, s.shape[-1]).double().tolist()
    picked = set()
    for r, row in enumerate(rows):
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))
        picked |= {(r, i) for i in order[:k]}
    return picked


def as_set(idx: torch.Tensor) -> set[tuple[int, int]]:
    flat = idx.reshape(-1, idx.shape[-1]).tolist() if idx.shape[-1] else []
    return {(r, i) for r, row in enumerate(flat) for i in row}


def scores(kind: str, shape, gen) -> torch.Tensor:
    s = torch.randn(*shape, generator=gen)
    if kind == "ints":  # HashAttention-like: few distinct values, ties everywhere
        s = torch.randint(0, 33, shape, generator=gen).float()
    if kind == "wide_ints":  # integers over more values than there are bins
        s = torch.randint(-500, 500, shape, generator=gen).float()
        s[..., ::5] = float("-inf")
    if kind == "negative_and_inf":  # every sign and −inf (forbidden keys)
        s = -s.abs() * 1e-3
        s[..., ::7] = float("-inf")
    if kind == "mixed_signs":  # a range of 2^200: the histogram bins are wide
        s = s * torch.logspace(-30, 30, shape[-1])
    if kind == "mostly_inf":  # fewer finite scores than k: −inf entries fill the rest
        s[..., 5:] = float("-inf")
    if kind == "plus_inf":  # +inf scores (and −inf): the range is infinite
        s[..., ::11] = float("inf")
        s[..., 1::13] = float("-inf")
    if kind == "zeros_and_nan":  # ±0.0 tie with each other; NaN counts as −inf
        s = torch.zeros(shape)
        s[..., ::2] = -0.0
        s[..., 1::7] = 1.0
        s[..., ::5] = float("nan")
    if kind == "outlier":  # one huge score: everything else falls in one bin
        s[..., min(3, shape[-1] - 1)] = 1e30
    if kind == "float_range":  # ±3e38: score − min overflows float32 (the bins cap it)
        s = s.clamp(-1, 1) * 3.0e38
    if kind == "float_range_plus_inf":  # and a +inf: the scale is 0 where the difference is inf
        s = s.clamp(-1, 1) * 3.0e38
        s[..., 1::9] = float("inf")
    if kind == "denormal_span":  # 0 and the least denormal: a scale past float32 (capped)
        s = torch.randint(0, 2, shape, generator=gen).float() * 1e-45
    if kind == "big_ints":  # integers near 2**30: their differences are still exact in float32
        s = torch.randint(0, 40, shape, generator=gen).float() * 64 + 2.0**30
    return s


#: The largest finite score of kinds made of integers in [0, top]: the bounded promise.
TOPS = {"ints": 32, "zeros_and_nan": 1}


def promises(kind: str) -> list[tuple[bool, int | None]]:
    """(integer, top) promises that hold for scores of ``kind``: none; integers (kinds of
    integers); integers in [0, top], tight and too wide for one bin per value (BINS − 1)."""
    out: list[tuple[bool, int | None]] = [(False, None)]
    if "ints" in kind or kind in TOPS:
        out.append((True, None))
    if kind in TOPS:
        out += [(True, TOPS[kind]), (True, BINS - 1)]
    return out


KINDS = [
    "normal",
    "ints",
    "wide_ints",
    "negative_and_inf",
    "mixed_signs",
    "mostly_inf",
    "outlier",
    "plus_inf",
    "zeros_and_nan",
    "float_range",
    "float_range_plus_inf",
    "denormal_span",
    "big_ints",
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape, k", [((3, 500), 50), ((2, 77), 77), ((4, 70), 1), ((2, 3, 99), 33)])
def test_topk_lowest_is_the_plain_rule(shape, k, kind):
    gen = torch.Generator().manual_seed(hash((shape, k, kind)) % 1000)
    s = scores(kind, shape, gen)
    values, idx = topk_lowest(s, k)
    assert values.shape == idx.shape == (*shape[:-1], k)
    assert torch.equal(torch.gather(counted(s), -1, idx), values)
    assert as_set(idx) == reference(s, k)


def test_topk_lowest_of_none():
    values, idx = topk_lowest(torch.randn(2, 3, 9), 0)
    assert values.shape == idx.shape == (2, 3, 0)


def test_topk_lowest_differs_from_an_arbitrary_tie_choice():
    """All scores equal: the rule takes exactly the first k indices."""
    s = torch.zeros(2, 40)
    assert as_set(topk_lowest(s, 5)[1]) == {(r, i) for r in range(2) for i in range(5)}


needs_kernel = pytest.mark.skipif(
    not triton_installed() or (not torch.cuda.is_available() and not interpreting()),
    reason="needs triton (setup.sh --dev) and a GPU or Triton's interpreter (tests/conftest.py)",
)


#: The selection's paths, each forced for every row by the sweeps below: radix digits in one
#: program, segments. The third, one sort in one program, takes rows of at most SORT_MAX
#: scores; :func:`test_sorted_selection_matches_the_rule` sweeps it on its own (its sort is
#: slow under the interpreter).
PATHS = ["one_program", "segments"]


@needs_kernel
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "shape, k",
    [
        ((3, 5000), 100),  # two segments
        ((2, 3 * SEG_MIN + 5), 700),  # four segments, the last nearly empty
        ((2, 40 * SEG_MIN + 3), 4000),  # 41 segments (the last of 3 scores): the bin chosen apart
        ((2, 2 * SEG_MIN), 2 * SEG_MIN),  # k = N
        ((4, 700), 1),
        ((1, 2, 3, 999), 333),
        ((3, 1), 1),  # one key
        ((2, 3), 2),
    ],
)
@pytest.mark.parametrize("path", PATHS)
def test_select_topk_matches_the_rule(shape, k, kind, path, monkeypatch):
    """Rows up to SMALL_MAX take the one-program selection, longer ones the segments; each
    path is forced here for every row."""
    from maskgraph.lowering import topk as triton_topk

    monkeypatch.setattr(triton_topk, "SMALL_MAX", 0 if path == "segments" else 1 << 20)
    monkeypatch.setattr(triton_topk, "SORT_MAX", 0)
    gen = torch.Generator().manual_seed(hash((shape, k, kind, "triton")) % 1000)
    s = scores(kind, shape, gen)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for promise, top in promises(kind):
        values, idx = select_topk(s.to(device), k, promise, top=top)
        values, idx = values.cpu(), idx.cpu()
        assert values.shape == idx.shape == (*shape[:-1], k) and idx.dtype == torch.int64
        assert torch.equal(torch.gather(counted(s), -1, idx), values)  # values are the scores at idx
        assert as_set(idx) == reference(s, k)  # the set, ties toward the lowest index


@needs_kernel
@pytest.mark.parametrize(
    "kind", ["normal", "ints", "mostly_inf", pytest.param("zeros_and_nan", marks=pytest.mark.slow), "outlier"]
)
@pytest.mark.parametrize(
    "shape, k", [((3, 5000), 300), ((2, 3 * SEG_MIN + 5), 700), ((4, 700), 90), ((2, 40), 40)]
)
@pytest.mark.parametrize("path", [*PATHS, "segments_choose_apart"])
def test_select_topk_with_a_device_count(shape, k, kind, path, monkeypatch):
    """A count read on the device (a share of a static buffer's tokens): the first
    min(count, k) slots hold the row's min(count, k) largest by the rule, the rest −inf at
    index 0; counts 0, 1, one in the middle, k and past k; integer scores with and without
    the promise; each path forced (the segments' bin chosen in the write or by a launch of its
    own, which also fill the slots past the count)."""
    from maskgraph.lowering import topk as triton_topk

    monkeypatch.setattr(triton_topk, "SMALL_MAX", 0 if path.startswith("segments") else 1 << 20)
    monkeypatch.setattr(triton_topk, "SORT_MAX", 0)
    if path == "segments_choose_apart":
        monkeypatch.setattr(triton_topk, "CHOOSE_IN_WRITE_SEGMENTS", 0)
    gen = torch.Generator().manual_seed(hash((shape, k, kind, "count")) % 1000)
    s = scores(kind, shape, gen)
    for count in (0, 1, k // 3, k, k + 5):
        kept = min(count, k)
        for promise, top in promises(kind):
            values, idx = select_topk(s, k, promise, torch.tensor(count), top)
            assert values.shape == idx.shape == (shape[0], k)
            assert as_set(idx[:, :kept]) == reference(s, kept), (count, promise)
            assert torch.equal(torch.gather(counted(s), -1, idx[:, :kept]), values[:, :kept])
            assert (values[:, kept:] == float("-inf")).all() and (idx[:, kept:] == 0).all()


#: The kinds the sorted selection runs by default; the others only with --runslow.
SORTED_DEFAULT = ("normal", "ints", "plus_inf", "mostly_inf")


@needs_kernel
@pytest.mark.parametrize(
    "kind", [k if k in SORTED_DEFAULT else pytest.param(k, marks=pytest.mark.slow) for k in KINDS]
)
def test_sorted_selection_matches_the_rule(kind, monkeypatch):
    """Rows of at most SORT_MAX scores are sorted in one program (``select_sorted``): the
    rule's set on awkward scores, k < N and k = N, with every promise, a device count and a
    prior's runs (rows of 200 scores in blocks of 256: the interpreter's sort is slow)."""
    from maskgraph.lowering import topk as triton_topk

    jitted, taken = triton_topk.jitted, []
    monkeypatch.setattr(
        triton_topk, "jitted", lambda module, name: taken.append(name) or jitted(module, name)
    )
    monkeypatch.setattr(triton_topk, "SORT_MAX", 256)
    gen = torch.Generator().manual_seed(hash((kind, "sorted")) % 1000)
    s = scores(kind, (3, 200), gen)
    for k in (20, 200):
        for promise, top in promises(kind):
            values, idx = select_topk(s, k, promise, top=top)
            assert as_set(idx) == reference(s, k)
            assert torch.equal(torch.gather(counted(s), -1, idx), values)
    for count in (0, 7, 25):
        values, idx = select_topk(s, 20, count=torch.tensor(count))
        kept = min(count, 20)
        assert as_set(idx[:, :kept]) == reference(s, kept)
        assert (values[:, kept:] == float("-inf")).all() and (idx[:, kept:] == 0).all()
    runs = [(0, 7, 0), (150, 200, 1)]
    masked = counted(s).masked_fill(dropped_by_runs(3, 200, 1, 1, 200, runs), float("-inf"))
    values, idx = select_topk(s, 20, exclude=[1, 1, 200, *(v for run in runs for v in run)])
    assert as_set(idx) == reference(masked, 20)
    for shape, k in (((3, 1), 1), ((2, 3), 2), ((4, 9), 1)):  # the smallest block: one key, k = 1
        tiny = scores(kind, shape, gen)
        values, idx = select_topk(tiny, k)
        assert as_set(idx) == reference(tiny, k)
        assert torch.equal(torch.gather(counted(tiny), -1, idx), values)
    assert set(taken) == {"select_sorted"}


@needs_kernel
def test_select_topk_rejects_a_bad_count():
    with pytest.raises(ValueError, match="count must be a 0-d integer tensor"):
        select_topk(torch.zeros(2, 10), 3, count=torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="count must be a 0-d integer tensor"):
        select_topk(torch.zeros(2, 10), 3, count=torch.tensor(2.0))
    with pytest.raises(ValueError, match="count must be a 0-d integer tensor"):
        select_topk(torch.zeros(2, 10), 3, count=torch.tensor(True))


@needs_kernel
def test_select_topk_rejects_k_out_of_range():
    with pytest.raises(ValueError, match=r"k must be in \[1, 10\]"):
        select_topk(torch.zeros(2, 10), 11)


#: Lane settings of the resolve: every kind takes the first two; the slow ones (streamed in
#: blocks of 16 lanes after a launch choosing the bin; the tiers split over two or three
#: launches, settings only) take the kinds whose ties and infinities the resolve sorts out.
RESOLVE_KINDS = ("normal", "ints", "mostly_inf", "zeros_and_nan")
RESOLVE_CASES = [
    *((kind, 1, (16, 64, 256)) for kind in KINDS),
    *((kind, 1, (256, 512, 1024)) for kind in KINDS),
    *(
        pytest.param(kind, launches, lanes, marks=pytest.mark.slow)
        for launches, lanes in ((1, (16, 16, 16)), (2, (16, 64, 256)), (3, (16, 64, 256)))
        for kind in RESOLVE_KINDS
    ),
]


@needs_kernel
@pytest.mark.parametrize("kind, launches, lanes", RESOLVE_CASES, ids=str)
def test_resolve_paths_match_the_rule(kind, lanes, launches, monkeypatch):
    """The resolve narrows its candidates in SMALL lanes, in MID lanes, in BLOCK lanes, or
    streams them when more than BLOCK, in one launch (the default) or in two or three: small
    lane counts here send the same rows down every one of those paths."""
    from maskgraph.lowering import topk as triton_topk

    small, mid, block = lanes
    monkeypatch.setattr(triton_topk, "RESOLVE_LAUNCHES", launches)
    monkeypatch.setattr(triton_topk, "SMALL_MAX", 0)
    if lanes == (16, 16, 16):  # the bin chosen by a launch of its own (STATE written there)
        monkeypatch.setattr(triton_topk, "CHOOSE_IN_WRITE_SEGMENTS", 0)
    monkeypatch.setattr(triton_topk, "RESOLVE_SMALL", small)
    monkeypatch.setattr(triton_topk, "RESOLVE_MID", mid)
    monkeypatch.setattr(triton_topk, "RESOLVE_BLOCK", block)
    gen = torch.Generator().manual_seed(hash((kind, lanes)) % 1000)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for shape, k in (((3, 5000), 100), ((2, 3000), 1500), ((2, 2 * SEG_MIN + 7), 40)):
        s = scores(kind, shape, gen)
        values, idx = select_topk(s.to(device), k)
        assert torch.equal(torch.gather(counted(s), -1, idx.cpu()), values.cpu())
        assert as_set(idx.cpu()) == reference(s, k)


@needs_kernel
@pytest.mark.parametrize("choose", ["in_write", "apart"])
@pytest.mark.parametrize("top, launches", [(32, 2), (BINS - 2, 2), (BINS - 1, 4)])
def test_bounded_integers_skip_the_range_and_the_resolve(top, launches, choose, monkeypatch):
    """Integers promised in [0, top] with top ≤ BINS − 2 take histogram and write only (each
    value its own bin, the ties written in index order); a wider promise takes range,
    histogram, write and the resolve (one launch). The bin is chosen by every write program
    for itself, or (past CHOOSE_IN_WRITE_SEGMENTS segments) by one more launch. Scores hold
    every value up to ``top`` and many ties at the k-th."""
    from maskgraph.lowering import topk as triton_topk

    launched = record_topk_launches(monkeypatch)
    monkeypatch.setattr(triton_topk, "SMALL_MAX", 0)
    if choose == "apart":
        monkeypatch.setattr(triton_topk, "CHOOSE_IN_WRITE_SEGMENTS", 0)
        launches += 1
    gen = torch.Generator().manual_seed(top)
    s = torch.randint(0, top + 1, (3, 3 * SEG_MIN + 7), generator=gen).float()
    s[0, ::9] = float("-inf")
    k = 900
    values, idx = select_topk(s, k, True, top=top)
    assert len(launched) == launches, launched
    assert ("select_choose" in launched) == (choose == "apart")
    assert as_set(idx) == reference(s, k)
    assert torch.equal(torch.gather(s, -1, idx), values)


#: (qc, block, K, runs): sink and window at decode; a window sliding over a chunk of queries;
#: pages partly covered; runs that overlap, touch (a page spans both), are empty or reach
#: past the keys; one run.
EXCLUSIONS = [
    (1, 1, 300, [(0, 7, 0), (290, 300, 1)]),
    pytest.param(3, 1, 300, [(0, 4, 0), (200, 230, 1)], marks=pytest.mark.slow),  # 20–35 s a path
    (2, 5, 298, [(0, 12, 0), (260, 298, 1)]),  # pages of 5 keys, the last one 3
    (1, 4, 300, [(0, 10, 0), (10, 17, 0)]),  # they touch: page 2 (keys 8-11) lies in both
    (1, 4, 300, [(0, 10, 0), (5, 40, 0)]),  # they overlap
    (2, 4, 300, [(30, 30, 0), (-50, 16, 1)]),  # an empty run; a run starting before key 0
    (1, 1, 300, [(100, 400, 0)]),
]


@needs_kernel
@pytest.mark.parametrize("qc, block, num_keys, runs", EXCLUSIONS)
@pytest.mark.parametrize("kind", ["normal", "ints", pytest.param("zeros_and_nan", marks=pytest.mark.slow)])
@pytest.mark.parametrize("path", PATHS)
def test_select_topk_drops_the_runs_it_is_given(qc, block, num_keys, runs, kind, path, monkeypatch):
    """``exclude``: the scores whose keys all lie in a prior's runs count as −inf, as if a pass
    had masked them; against masking key by key and the plain rule, on both paths and with
    every promise the kind allows."""
    from maskgraph.lowering import topk as triton_topk

    monkeypatch.setattr(triton_topk, "SMALL_MAX", 0 if path == "segments" else 1 << 20)
    monkeypatch.setattr(triton_topk, "SORT_MAX", 0)
    monkeypatch.setattr(triton_topk, "SEG_MIN", 16)  # several segments even for short rows
    n = -(-num_keys // block)
    rows = 2 * qc * 2  # (B=2, H=2, qc queries)
    gen = torch.Generator().manual_seed(hash((qc, block, num_keys, kind)) % 1000)
    s = scores(kind, (rows, n), gen)
    masked = counted(s).masked_fill(dropped_by_runs(rows, n, qc, block, num_keys, runs), float("-inf"))
    exclude = [qc, block, num_keys, *(v for run in runs for v in run)]
    k = max(1, n // 3)
    for promise, top in promises(kind):
        values, idx = select_topk(s, k, promise, top=top, exclude=exclude)
        assert as_set(idx) == reference(masked, k)
        assert torch.equal(torch.gather(masked, -1, idx), values)


@needs_kernel
@pytest.mark.parametrize(
    "kind", ["normal", "ints", "negative_and_inf", "plus_inf", "zeros_and_nan", "mostly_inf"]
)
@pytest.mark.parametrize("block", [7, 64, 2 * SEG_MIN + 9])
def test_select_topk_takes_the_ranges_it_is_given(kind, block, monkeypatch):
    """``ranges`` made per block of scores (as a score kernel writes them; a block count that
    is not the segments') replace the range launch: the same set as the rule, with the tight
    bounds, with looser ones (any bounds holding every finite score serve) and with scores
    set to −inf after the bounds were taken (a mask applied later)."""
    from maskgraph.lowering import topk as triton_topk

    launched = record_topk_launches(monkeypatch)
    monkeypatch.setattr(triton_topk, "SMALL_MAX", 0)
    gen = torch.Generator().manual_seed(hash((kind, block)) % 1000)
    s = scores(kind, (3, 2 * SEG_MIN + 9), gen)
    tight = block_ranges(s, block)
    loose = tight.clone()
    loose[..., 0] = (loose[..., 0] - 1000).clamp(min=-(2**31))
    loose[..., 1] = (loose[..., 1] + 1000).clamp(max=2**31 - 1)
    masked = s.clone()
    masked[:, 5::3] = float("-inf")
    k = 150
    for given, bounds in ((s, tight), (s, loose), (masked, tight)):
        launched.clear()
        values, idx = select_topk(given, k, ranges=bounds.int())
        assert "select_range" not in launched and len(launched) >= 3, launched
        assert as_set(idx) == reference(given, k)
        assert torch.equal(torch.gather(counted(given), -1, idx), values)


def test_select_topk_rejects_bad_ranges():
    s = torch.zeros(2, 2 * SEG_MIN + 5)
    good = torch.zeros(2, 3, 2, dtype=torch.int32)
    for bad in (
        good.long(),
        good[:1],
        good[..., :1],
        good[:, :0],
        good.transpose(0, 1).contiguous().transpose(0, 1),
    ):
        with pytest.raises(
            ValueError, match="ranges must be a contiguous int32 tensor of shape \\(2, P, 2\\)"
        ):
            select_topk(s, 3, ranges=bad)


def test_select_topk_rejects_a_bad_exclusion_or_histogram():
    with pytest.raises(ValueError, match="lo, hi, slope for 1 to 2 runs, got 5 numbers"):
        select_topk(torch.zeros(2, 10), 3, exclude=[1, 1, 10, 0, 4])
    with pytest.raises(ValueError, match="qc ≥ 1, block ≥ 1 and 0 < K < 2\\*\\*31 − block, got qc=0"):
        select_topk(torch.zeros(2, 10), 3, exclude=[0, 1, 10, 0, 4, 0])
    s = torch.zeros(2, 2 * SEG_MIN + 5)
    nb = bounded_bins(32)
    hist = torch.zeros(3, 2, nb, dtype=torch.int32)[:, :2]
    for bad in (hist[:2].transpose(0, 1).contiguous().transpose(0, 1), hist[:2, :, :16], hist[:2].long()):
        with pytest.raises(ValueError, match="hist must be a contiguous int32 tensor of shape"):
            select_topk(s, 3, True, top=32, hist=bad)
    with pytest.raises(ValueError, match="hist must be"):  # short rows take no histograms
        select_topk(torch.zeros(2, 10), 3, True, top=32, hist=torch.zeros(2, 1, nb, dtype=torch.int32))
    with pytest.raises(ValueError, match="exclude and hist are taken by the Triton selection only"):
        topk_lowest(torch.zeros(2, 10), 3, triton=False, exclude=[1, 1, 10, 0, 4, 0])


def test_segments_are_powers_of_two_and_bounded():
    for n in (1, SEG_MIN, SEG_MIN + 1, 131072, 524288, 10**6, 10**7):
        seg = segment(n)
        assert SEG_MIN <= seg <= SEG_MAX and seg & (seg - 1) == 0
        assert -(-n // seg) <= SEGMENTS or seg == SEG_MAX


@needs_kernel
def test_topk_lowest_takes_the_triton_selection_when_asked(monkeypatch):
    """triton=None picks it on CUDA only; triton=True forces it (here: the interpreter)."""
    from maskgraph.lowering import topk as triton_topk

    used = []
    real = triton_topk.select_topk
    monkeypatch.setattr(triton_topk, "select_topk", lambda *a: used.append(1) or real(*a))
    s = torch.randint(0, 5, (3, 300)).float()
    assert as_set(topk_lowest(s, 40, triton=True)[1]) == reference(s, 40) and used
    used.clear()
    topk_lowest(s, 40)
    assert bool(used) == torch.cuda.is_available()
