"""The fused Triton gather-attention kernel, run on the CPU through Triton's interpreter.

The GPU runs the same kernel compiled (benchmarks/sparse.py checks it there against the torch
path before timing); here every case is compared with a float64 reference.
"""

from __future__ import annotations

import pytest
import torch
from references import reference_gathered

import maskgraph as mg

pytest.importorskip("triton", reason="the fused kernel needs triton (installed by setup.sh --dev)")

from maskgraph.sparse import fused  # noqa: E402
from maskgraph.triton_util import interpreting  # noqa: E402

if not torch.cuda.is_available() and not interpreting():
    pytest.skip(
        "no GPU and Triton's interpreter is off (tests/conftest.py turns it on)", allow_module_level=True
    )


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def random_lists(gen, b, hsel, nq, nk, n, keep=0.8):
    idx = torch.stack([torch.randperm(nk, generator=gen)[:n] for _ in range(b * hsel * nq)])
    idx = idx.view(b, hsel, nq, n)
    valid = torch.rand(b, hsel, nq, n, generator=gen) < keep
    return idx, valid


# (B, Hq, Hkv, Hsel, Q, K, n, D): shared lists (Hsel = Hkv, G = 4 and 3), per-head lists,
# Q > 1, Q = K, n not a multiple of the 64-key block, several splits, D not a power of two
CASES = [
    (1, 8, 2, 2, 1, 300, 70, 16),
    (2, 4, 2, 4, 3, 97, 50, 32),
    (1, 6, 2, 2, 2, 41, 41, 16),
    (2, 4, 4, 4, 1, 700, 333, 64),
    (1, 4, 1, 1, 5, 5, 5, 24),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "B{}Hq{}Hkv{}Hsel{}Q{}K{}n{}D{}".format(*c))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("merge_parts", [1, 4])
def test_kernel_against_float64(case, dtype, merge_parts, monkeypatch):
    """The gather and the merge (each head merged by one program, or its channels by four)
    against float64 attention over the listed keys; empty rows counted once per query head."""
    monkeypatch.setattr(fused, "MERGE_PARTS", merge_parts)
    b, hq, hkv, hsel, nq, nk, n, d = case
    gen = torch.Generator().manual_seed(hash(case) % 10_000)
    q = torch.randn(b, hq, nq, d, generator=gen).to(dtype)
    k = torch.randn(b, hkv, nk, d, generator=gen).to(dtype)
    v = torch.randn(b, hkv, nk, d, generator=gen).to(dtype)
    idx, valid = random_lists(gen, b, hsel, nq, nk, n)
    lists = torch.where(valid, idx, -1).int()
    out, empty = fused.fused_gather_attention(q, k, v, None, d**-0.5, lists)
    want = reference_gathered(q, k, v, None, d**-0.5, idx, valid, None)
    assert out.dtype == torch.float32 and out.shape == (b, hq, nq, d)
    assert rel(out, want) < (1e-5 if dtype == torch.float32 else 1e-2)
    assert int(empty) == int((~valid).all(-1).sum()) * (hq // hsel)


@pytest.mark.parametrize("mask_heads", [1, 4])
@pytest.mark.parametrize("with_sinks", [False, True])
@pytest.mark.parametrize("merge_parts", [1, 2])
def test_kernel_mask_sinks_and_empty_rows(mask_heads, with_sinks, merge_parts, monkeypatch):
    """A mask of one row for every head (read once a block) or a row per head; sink logits;
    rows with no key."""
    monkeypatch.setattr(fused, "MERGE_PARTS", merge_parts)
    gen = torch.Generator().manual_seed(7 + mask_heads + 10 * with_sinks)
    b, hq, hkv, nq, nk, n, d = 2, 4, 2, 3, 150, 90, 16
    q, k, v = (torch.randn(b, h, m, d, generator=gen) for h, m in ((hq, nq), (hkv, nk), (hkv, nk)))
    idx, valid = random_lists(gen, b, hkv, nq, nk, n)
    valid[0, 1, 2] = False  # a row with no listed key
    am = torch.randn(b, mask_heads, nq, nk, generator=gen)
    am[1, ..., :40] = float("-inf")  # padding: masked keys may still be listed
    sinks = torch.randn(hq, generator=gen) if with_sinks else None
    lists = torch.where(valid, idx, -1).int()
    out, empty = fused.fused_gather_attention(q, k, v, am, 0.3, lists, sinks)
    want = reference_gathered(q, k, v, am, 0.3, idx, valid, sinks)
    assert torch.isfinite(out).all()
    assert rel(out, want) < 1e-5
    if not with_sinks:
        assert out[0, 2:4, 2].abs().max() == 0  # the empty row's two query heads
    assert int(empty) >= 2


def test_splits_cover_every_block():
    for rows in (1, 8, 64, 1000):
        for n in (1, 63, 64, 65, 5000, 13107):
            splits, per = fused._splits(rows, n)
            blocks = -(-n // fused.BLOCK_N)
            assert splits * per >= blocks and (splits - 1) * per < blocks


def test_index_lists_merge_spans_and_selections():
    pos_valid = torch.tensor([True, True, False]).view(1, 1, 1, 3)
    idx = torch.tensor([[7, 9], [4, 2]]).view(1, 2, 1, 2)
    sel_valid = torch.tensor([[True, False], [True, True]]).view(1, 2, 1, 2)
    lists = fused.index_lists([(10, 3, pos_valid)], (idx, sel_valid), 1, 2, 4, 1)
    assert lists.dtype == torch.int32 and lists.shape == (1, 2, 1, 5)
    assert lists[0, :, 0].tolist() == [[10, 11, -1, 7, -1], [10, 11, -1, 4, 2]]


def expand_selection(sel, b, nq, nk):
    """A Selection as plain (idx, valid) lists (B, Hsel, Qc, n), key by key: a run's keys in
    its (lo, hi, slope) run and in no earlier run; a listed entry's page keys where its value
    is finite, below nk and in no run."""

    def in_run(j, run, q):
        _, _, lo, hi, slope = run
        return lo + slope * q <= j < hi + slope * q

    rows = []
    for bi in range(b):
        for h in range(sel.heads):
            for q in range(nq):
                keys, ok = [], []
                for r, run in enumerate(sel.runs):
                    for j in range(run[0], run[0] + run[1]):
                        keys.append(j)
                        ok.append(in_run(j, run, q) and not any(in_run(j, x, q) for x in sel.runs[:r]))
                if sel.idx is not None:
                    ix = sel.idx.expand(b, sel.heads, nq, -1)[bi, h, q].tolist()
                    vs = (
                        sel.vals.expand(b, sel.heads, nq, -1)[bi, h, q].tolist()
                        if sel.vals is not None
                        else None
                    )
                    for e, base in enumerate(ix):
                        kept = vs[e] > float("-inf") if vs is not None else base >= 0
                        for p in range(sel.page):
                            j = base * sel.page + p
                            keys.append(max(j, 0))
                            ok.append(kept and j < nk and not any(in_run(j, x, q) for x in sel.runs))
                rows.append((keys, ok))
    n = len(rows[0][0])
    idx = torch.tensor([r[0] for r in rows]).view(b, sel.heads, nq, n)
    valid = torch.tensor([r[1] for r in rows]).view(b, sel.heads, nq, n)
    return idx, valid


# (B, Hq, Hkv, Q, K, page, listed entries, runs): an overlapping sink and window (Q > 1: the
# window slides), a window reaching before key 0, pages past K, Q = K, one run only, no runs
SELECTIONS = [
    (1, 8, 2, 1, 300, 1, 40, [(0, 8, 0, 8, 0), (200, 100, 200, 300, 0)]),
    (2, 4, 2, 3, 97, 4, 9, [(0, 6, 0, 6, 0), (2, 12, 3, 13, 1)]),
    (1, 6, 2, 2, 41, 16, 3, [(0, 41, -5, 3, 1)]),
    (2, 4, 4, 5, 5, 1, 5, [(0, 2, 0, 2, 0), (0, 5, -2, 1, 1)]),
    (1, 4, 1, 2, 130, 8, 17, []),
    # a sink longer than a program's piece (BLOCK_N = 64): the run ends past the program's end
    (1, 4, 2, 1, 300, 4, 10, [(0, 100, 0, 100, 0), (250, 50, 250, 300, 0)]),
    # pages of 6 keys (not a power of two: one load a key) and of 16 after 70 run keys
    (1, 4, 2, 2, 200, 6, 9, [(0, 4, 0, 4, 0), (190, 10, 189, 199, 1)]),
    (2, 4, 2, 1, 700, 16, 9, [(0, 6, 0, 6, 0), (636, 64, 636, 700, 0)]),
]


@pytest.mark.parametrize(
    "case", SELECTIONS, ids=lambda c: "B{}Hq{}Hkv{}Q{}K{}page{}n{}runs{}".format(*c[:7], len(c[7]))
)
@pytest.mark.parametrize("per_head", [False, True], ids=["shared", "per-head"])
@pytest.mark.parametrize("with_vals", [True, False], ids=["vals", "idx-sign"])
def test_kernel_reads_runs_and_listed_entries(case, per_head, with_vals):
    """gather_decode reading runs and the top-k's own (idx, vals) — pages expanded, keys of
    earlier runs and of any run dropped — against float64 attention over the same keys listed
    one by one."""
    check_runs_and_listed(case, per_head, with_vals)


@pytest.mark.parametrize("case", SELECTIONS[:3] + SELECTIONS[-1:], ids=lambda c: f"K{c[4]}runs{len(c[7])}")
def test_kernel_reads_with_wide_offsets(case, monkeypatch):
    """64-bit key offsets (WIDE, chosen for caches whose slab passes 2**31 elements), and each
    page's index and value loaded once a key (as pages not a power of two are): the same keys."""
    monkeypatch.setattr(fused, "_wide", lambda keys, values: True)
    monkeypatch.setattr(fused.Selection, "entry_rows", property(lambda self: False))
    check_runs_and_listed(case, True, True)


def test_pages_start_aligned_after_the_runs():
    """Under entry_rows the listed pages start at the runs' total rounded up to a page."""
    idx = torch.zeros(1, 1, 1, 5, dtype=torch.int64)
    runs = ((0, 4, 0, 4, 0), (90, 10, 90, 100, 0))
    assert fused.Selection(runs, idx, None, 16, 1).width == 16 + 5 * 16
    assert fused.Selection(runs, idx, None, 6, 1).width == 14 + 5 * 6  # not a power of two
    assert fused.Selection(runs, idx, None, 128, 1).width == 14 + 5 * 128  # over BLOCK_N
    assert fused.Selection(runs, None, None, 1, 1).width == 14


def test_wide_offsets_chosen_by_the_cache_slab():
    """64-bit offsets exactly where K · (the key stride) reaches 2**31: a (B, K, H, D) cache
    of 2M keys, 8 heads of 128 (stride 1024) needs them; the (B, H, K, D) layout does not."""
    keys = torch.empty(1, 2**21, 8, 128, device="meta").transpose(1, 2)
    assert fused._wide(keys, keys)
    assert not fused._wide(keys.contiguous(), keys.contiguous())
    assert not fused._wide(keys[:, :, : 2**21 - 1], keys.contiguous()[:, :, : 2**21 - 1])


def check_runs_and_listed(case, per_head: bool, with_vals: bool) -> None:
    b, hq, hkv, nq, nk, page, n, runs = case
    gen = torch.Generator().manual_seed(hash(case[:7]) % 10_000 + per_head)
    heads = hq if per_head else hkv
    q = torch.randn(b, hq, nq, 16, generator=gen).to(torch.bfloat16)
    k = torch.randn(b, hkv, nk, 16, generator=gen).to(torch.bfloat16)
    v = torch.randn(b, hkv, nk, 16, generator=gen).to(torch.bfloat16)
    pages = -(-nk // page)
    idx = torch.stack([torch.randperm(pages, generator=gen)[:n] for _ in range(b * heads * nq)])
    idx = idx.view(b, heads, nq, n)
    vals = torch.randn(b, heads, nq, n, generator=gen)
    vals[torch.rand(vals.shape, generator=gen) < 0.2] = float("-inf")
    if not with_vals:
        idx = torch.where(vals > float("-inf"), idx, -1)
    sel = fused.Selection(tuple(runs), idx, vals if with_vals else None, page, heads)
    want_idx, want_valid = expand_selection(sel, b, nq, nk)
    assert want_valid.any()
    out, empty = fused.fused_gather_attention(q, k, v, None, 0.25, sel)
    want = reference_gathered(q, k, v, None, 0.25, want_idx, want_valid, None)
    assert rel(out, want) < 1e-2
    assert int(empty) == int((~want_valid).all(-1).sum()) * (hq // heads)


def test_kernel_reads_runs_alone():
    """No listed part (streaming_llm): the runs are all the kernel reads."""
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, h, m, 16, generator=gen) for h, m in ((4, 3), (2, 70), (2, 70)))
    sel = fused.Selection(((0, 4, 0, 4, 0), (60, 10, 61, 68, 1)), None, None, 1, 2)
    out, _ = fused.fused_gather_attention(q, k, v, None, 0.25, sel)
    want_idx, want_valid = expand_selection(sel, 2, 3, 70)
    assert rel(out, reference_gathered(q, k, v, None, 0.25, want_idx, want_valid, None)) < 1e-5


GRAPHS = {
    "streaming_llm": {"sink_size": 3, "window_size": 5},
    "oracle_topk": {"sink_size": 3, "window_size": 5, "heavy_size": 7},
    "quest": {"sink_size": 3, "window_size": 5, "heavy_size": 12, "page_size": 4},
}


@pytest.mark.parametrize("gqa", ["per_head", "shared"])
@pytest.mark.parametrize("name", list(GRAPHS))
@pytest.mark.parametrize("topk", ["torch", "auto"])
@pytest.mark.parametrize("masked", [True, False])
def test_runner_kernel_matches_torch_path(name, gqa, topk, masked, monkeypatch):
    """Also: on the kernel path topk="auto" selects with the Triton top-k of :mod:`.topk`,
    which drops the prior's sink and window runs itself where no attention mask applies and
    the scores come from the estimator's kernel (two queries: the window slides)."""
    from maskgraph.lowering import topk as triton_topk

    used, excludes = [], []
    real, real_select = triton_topk.jitted, triton_topk.select_topk_2d
    monkeypatch.setattr(triton_topk, "jitted", lambda *a: used.append(1) or real(*a))

    def select(*args):
        excludes.append(args[5] if len(args) > 5 else None)
        return real_select(*args)

    monkeypatch.setattr(triton_topk, "select_topk_2d", select)
    read, real_attend = [], fused.fused_gather_attention
    monkeypatch.setattr(fused, "fused_gather_attention", lambda *a: read.append(a[5]) or real_attend(*a))
    gen = torch.Generator().manual_seed(len(name) + len(gqa))
    b, hq, hkv, nq, nk, d = 2, 4, 2, 2, 45, 16
    q, k, v = (torch.randn(b, h, m, d, generator=gen) for h, m in ((hq, nq), (hkv, nk), (hkv, nk)))
    am = None
    if masked:
        am = torch.zeros(b, 1, nq, nk)
        am[0, ..., :4] = float("-inf")
    graph = mg.load_graph(name, overrides=GRAPHS[name])
    fast = mg.compile(graph, mode="sparse", gqa=gqa, kernel="triton", topk=topk)
    plain = mg.compile(graph, mode="sparse", gqa=gqa, kernel="torch")
    assert fast._sparse.uses_kernel(q) and not plain._sparse.uses_kernel(q)
    a = fast(q, k, v, attention_mask=am, state=mg.State())
    want = plain(q, k, v, attention_mask=am, state=mg.State())
    assert rel(a, want) < 1e-5
    assert int(fast.empty_rows) == int(plain.empty_rows)
    assert bool(used) == (name != "streaming_llm" and topk == "auto")
    # Quest: the sink and the window reach the kernel as runs, the top-k's pages as it wrote
    # them (pages under a per-head mask are filtered per head: lists then); the other graphs
    # read int32 lists (faster for runs alone and key selections, run 68)
    (sel,) = read
    if name == "quest" and not (masked and gqa == "per_head"):
        assert [r[:2] for r in sel.runs] == [(0, 3), (nk - nq - 4, nq + 4)]
        assert sel.page == 4 and sel.vals is not None and sel.idx.dtype == torch.int64
    else:
        assert sel.runs == () and sel.vals is None and sel.idx.dtype == torch.int32
    if used:  # Quest's page scores from its kernel (grouped or per head), unmasked: the top-k
        # drops the sink [0, 3) and the window (t − 5, t] for t = 43, 44 itself, runs (0, 3, 0)
        # and (39, 44, 1)
        dropped = name == "quest" and not masked
        assert excludes == [[nq, 4, nk, 0, 3, 0, nk - nq - 4, nk - nq + 1, 1] if dropped else None]


def test_runs_in_kernel_agree_with_the_torch_path(monkeypatch):
    """Quest through runs and the top-k's pages on the fused kernel, against the torch path:
    equal outputs, three queries with the window sliding over the sink, K = 11 (a short page)."""
    gen = torch.Generator().manual_seed(21)
    q, k, v = (torch.randn(1, h, m, 16, generator=gen) for h, m in ((4, 3), (2, 11), (2, 11)))
    graph = mg.load_graph("quest", overrides=GRAPHS["quest"])
    read = []
    real = fused.fused_gather_attention
    monkeypatch.setattr(fused, "fused_gather_attention", lambda *a: read.append(a[5]) or real(*a))
    outs = [
        mg.compile(graph, mode="sparse", gqa="shared", kernel=kernel)(q, k, v, state=mg.State())
        for kernel in ("triton", "torch")
    ]
    assert [len(sel.runs) for sel in read] == [2]
    assert rel(outs[0], outs[1]) < 1e-6


CAUSAL_PAGES = """
graph: causal_pages
params: {heavy_size: 12, page_size: 4}
nodes:
  - {name: causal, op: causal}
  - {name: bounds, op: quest, params: {page_size: $page_size, label_bits: 16}}
  - {name: heavy, op: topk_pages, inputs: {scores: bounds, prior: causal}, params: {k: $heavy_size, page_size: $page_size}}
  - {name: out, op: union, inputs: {masks: [causal, heavy]}}
output: out
"""


@pytest.mark.parametrize("nq", [1, 4])
@pytest.mark.parametrize("topk", ["torch", "auto"])
@pytest.mark.parametrize("sizes", [(12, 4), (2, 2)], ids=["3-pages-of-4", "1-page-of-2"])
def test_causal_prior_of_pages_matches_torch_path(nq, topk, sizes):
    """Causality keeps 0 ≤ j ≤ t for query t: one run for one query, none for a chunk of
    several (a sliding run would drop keys 0 … q − 1 of query q where the kernel reads runs,
    and let the top-k pick pages of those keys where it drops its prior; found by a review's
    fuzzing)."""
    graph = mg.load_graph(CAUSAL_PAGES, overrides={"heavy_size": sizes[0], "page_size": sizes[1]})
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        q, k, v = (torch.randn(1, h, m, 16, generator=gen) for h, m in ((4, nq), (2, 16), (2, 16)))
        want = mg.compile(graph, mode="sparse", gqa="shared", kernel="torch")(q, k, v, state=mg.State())
        fast = mg.compile(graph, mode="sparse", gqa="shared", kernel="triton", topk=topk)
        assert rel(fast(q, k, v, state=mg.State()), want) < 1e-5


def test_kernel_option_is_checked():
    """Also: kernel="auto" keeps the torch path on the CPU."""
    with pytest.raises(mg.NotSupportedError, match="kernel must be one of auto, triton, torch"):
        mg.compile("streaming_llm", mode="sparse", kernel="cuda")
    with pytest.raises(mg.NotSupportedError, match="topk must be one of auto, torch, triton"):
        mg.compile("streaming_llm", mode="sparse", topk="fast")
    cpu = mg.compile("streaming_llm", mode="sparse")
    assert not cpu._sparse.uses_kernel(torch.zeros(1, 4, 1, 16))  # auto: torch on the CPU


@pytest.mark.parametrize("name", ["oracle_topk", "quest"])
def test_inductor_selection_with_triton_topk_matches_torch_path(name):
    """The Triton top-k is a custom operator: torch.compile calls it inside the compiled
    selection, with the prior's runs (symbolic positions) for it to drop."""
    graph = mg.load_graph(name, overrides=GRAPHS[name])
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, h, m, 16, generator=gen) for h, m in ((4, 1), (2, 45), (2, 45)))
    fast = mg.compile(graph, backend="inductor", mode="sparse", gqa="shared", kernel="triton", topk="triton")
    plain = mg.compile(graph, mode="sparse", gqa="shared", kernel="torch")
    assert rel(fast(q, k, v, state=mg.State()), plain(q, k, v, state=mg.State())) < 1e-5


def test_runner_kernel_counts_empty_rows_in_place():
    """The kernel adds empty rows to the compiled attention's own counter, in place (a recorded
    CUDA graph replaying the call keeps counting); the count equals the torch path's."""
    gen = torch.Generator().manual_seed(11)
    b, hq, hkv, nq, nk, d = 2, 4, 2, 1, 30, 16
    q, k, v = (torch.randn(b, h, m, d, generator=gen) for h, m in ((hq, nq), (hkv, nk), (hkv, nk)))
    am = torch.zeros(b, 1, nq, nk, dtype=torch.bool)
    am[1] = True  # batch row 1 may attend to every key; row 0 to none: Hq empty rows a call
    graph = mg.load_graph("streaming_llm", overrides={"sink_size": 3, "window_size": 5})
    fast = mg.compile(graph, mode="sparse", kernel="triton")
    plain = mg.compile(graph, mode="sparse", kernel="torch")
    fast(q, k, v, attention_mask=am)
    counter = fast.empty_rows
    for _ in range(2):
        fast(q, k, v, attention_mask=am)
        plain(q, k, v, attention_mask=am)
    assert fast.empty_rows is counter  # the same tensor, counted into in place
    assert int(counter) == 3 * hq and int(plain.empty_rows) == 2 * hq
