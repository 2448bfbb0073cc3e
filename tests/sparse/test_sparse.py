"""Sparse mode: same output as simulate mode, only the selected keys read, clear refusals."""

from __future__ import annotations

import math
import sys
import zlib

import pytest
import torch
from references import reference_gathered
from shipped import shrunk, sparse_graphs, uses

import maskgraph as mg
from maskgraph.errors import NotSupportedError, UnknownOperatorError
from maskgraph.sparse.gather import gathered_attention

SMALL = {"sink_size": 3, "window_size": 5}
# Small budgets on small K, by parameter: each graph that runs sparse takes those it has
# (page_size 4 makes K=37 a partial page).
SMALL_PARAMS = {**SMALL, "heavy_size": 7, "page_size": 4, "pq_bits": 3, "kmeans_iter": 3, "group_factor": 4}
# Budgets that leave these graphs' selections something to choose among at K of 20-50.
HEAVY = {"quest": 12, "pqcache": 0.2, "double_sparsity": 0.2}
GRAPHS = {
    name: shrunk(name, SMALL_PARAMS, **({"heavy_size": HEAVY[name]} if name in HEAVY else {}))
    for name in sparse_graphs()
}
# (B, Hq, Hkv, Q, K): decode with GQA, batch, prefill chunks, Q = K, G = 3
SHAPES = [(1, 4, 2, 1, 37), (2, 4, 2, 1, 50), (1, 4, 2, 6, 41), (2, 2, 2, 23, 23), (1, 6, 2, 3, 30)]
D = 16


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    """Calibration files for the graphs that need them, made per (Hq, Hkv)."""
    folder = tmp_path_factory.mktemp("calib")
    made: dict[tuple, dict] = {}

    def files(hq: int, hkv: int) -> dict:
        if (hq, hkv) not in made:
            out = {}
            try:
                from maskgraph.ops.zoo import hashattention as ha

                path = folder / f"hat_{hq}_{hkv}.safetensors"
                ha.save_hash_weights(path, ha.random_hash_weights(1, hq, hkv, D, 32, 8, seed=1))
                out["hat_weights"] = str(path)
            except ImportError:
                pass
            try:
                from maskgraph.ops.zoo import double_sparsity as ds

                gen = torch.Generator().manual_seed(2)
                ch = torch.stack([torch.randperm(D, generator=gen) for _ in range(hkv)])[None]
                path = folder / f"ds_{hkv}.safetensors"
                ds.save_channels(path, ch)
                out["ds_channels"] = str(path)
            except ImportError:
                pass
            made[(hq, hkv)] = out
        return made[(hq, hkv)]

    return files


def load(name: str, calib, hq: int, hkv: int, **extra) -> mg.Graph:
    overrides = dict(GRAPHS[name])
    files = calib(hq, hkv)
    if name == "hashattention":
        overrides["hat_weights"] = files.get("hat_weights")
    if name == "double_sparsity":
        overrides["ds_channels"] = files.get("ds_channels")
    overrides.update(extra)
    try:
        return mg.load_graph(f"graphs/{name}.yaml", overrides=overrides)
    except (FileNotFoundError, UnknownOperatorError) as exc:
        pytest.skip(f"graph {name} not available yet: {exc}")


def inputs(b, hq, hkv, q, k, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    qs = torch.randn(b, hq, q, D, generator=gen).to(dtype)
    ks = torch.randn(b, hkv, k, D, generator=gen).to(dtype)
    vs = torch.randn(b, hkv, k, D, generator=gen).to(dtype)
    return qs, ks, vs


def padding_mask(b, q, k, pad=4):
    """Additive (B, 1, Q, K): row 0 is left-padded by ``pad`` keys."""
    am = torch.zeros(b, 1, q, k)
    am[0, :, :, :pad] = float("-inf")
    return am


def both(graph, q, k, v, **kw):
    sim = mg.compile(graph)
    sp = mg.compile(graph, mode="sparse")
    a = sim(q, k, v, state=mg.State(), **kw)
    b = sp(q, k, v, state=mg.State(), **kw)
    return a, b, sim, sp


# ----- same output as simulate ------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}Hq{}Hkv{}Q{}K{}".format(*s))
@pytest.mark.parametrize("name", list(GRAPHS))
def test_matches_simulate_float32(name, shape, calib):
    b, hq, hkv, q, k = shape
    graph = load(name, calib, hq, hkv)
    qs, ks, vs = inputs(*shape, seed=zlib.crc32(f"{name}{shape}".encode()) % 1000)
    a, s, _, _ = both(graph, qs, ks, vs)
    assert s.shape == a.shape and s.dtype == qs.dtype
    assert rel(s, a) < 1e-4


@pytest.mark.parametrize("name", list(GRAPHS))
def test_matches_simulate_with_padding_mask(name, calib):
    b, hq, hkv, q, k = 2, 4, 2, 3, 38
    graph = load(name, calib, hq, hkv)
    qs, ks, vs = inputs(b, hq, hkv, q, k, seed=5)
    a, s, _, _ = both(graph, qs, ks, vs, attention_mask=padding_mask(b, q, k))
    assert rel(s, a) < 1e-4


@pytest.mark.parametrize("name", list(GRAPHS))
def test_matches_simulate_bf16(name, calib):
    b, hq, hkv, q, k = 2, 4, 2, 2, 45
    graph = load(name, calib, hq, hkv)
    qs, ks, vs = inputs(b, hq, hkv, q, k, dtype=torch.bfloat16, seed=7)
    a, s, _, _ = both(graph, qs, ks, vs)
    assert s.dtype == torch.bfloat16
    assert rel(s, a) < 1e-2


def test_float_sizes_and_per_head_sinks(calib):
    graph = load("oracle_topk", calib, 4, 2, sink_size=0.05, window_size=0.1, heavy_size=0.15)
    qs, ks, vs = inputs(1, 4, 2, 4, 61, seed=3)
    sinks = torch.tensor([0.5, -1.0, 2.0, 0.0])
    a, s, _, _ = both(graph, qs, ks, vs, sinks=sinks)
    assert rel(s, a) < 1e-4


def test_bool_mask_and_empty_rows_counted_like_simulate(calib):
    graph = load("oracle_topk", calib, 4, 2)
    qs, ks, vs = inputs(2, 4, 2, 3, 20, seed=11)
    keep = torch.ones(2, 1, 3, 20, dtype=torch.bool)
    keep[1, :, 2, :] = False  # batch row 1, last query: no key allowed
    a, s, sim, sp = both(graph, qs, ks, vs, attention_mask=keep)
    assert torch.isfinite(s).all()
    assert torch.equal(s[1, :, 2], torch.zeros_like(s[1, :, 2]))
    assert rel(s, a) < 1e-4
    assert int(sp.empty_rows) == int(sim.empty_rows) == 4  # 4 query heads


def test_decode_loop_with_state_matches_simulate(calib):
    """Incremental caches (Quest pages, PQ codes) kept across steps give simulate's outputs."""
    for name in ("quest", "pqcache", "oracle_topk"):
        graph = load(name, calib, 4, 2)
        sim, sp = mg.compile(graph), mg.compile(graph, mode="sparse")
        st_sim, st_sp = mg.State(), mg.State()
        qs, ks, vs = inputs(1, 4, 2, 1, 40, seed=13)
        for step in range(5):
            k_now = 33 + step
            kw = dict(layer_idx=0)
            a = sim(qs, ks[:, :, :k_now], vs[:, :, :k_now], state=st_sim, **kw)
            b = sp(qs, ks[:, :, :k_now], vs[:, :, :k_now], state=st_sp, **kw)
            assert rel(b, a) < 1e-4, (name, step)


@pytest.mark.parametrize("name", ["streaming_llm", "oracle_topk", "quest"])
def test_chunked_prefill_matches_simulate(name, calib):
    graph = load(name, calib, 2, 1)
    qs, ks, vs = inputs(1, 2, 1, 30, 30, seed=17)
    sim = mg.compile(graph)
    sp = mg.compile(graph, mode="sparse", chunk_size=7)
    assert rel(sp(qs, ks, vs), sim(qs, ks, vs)) < 1e-4


COMBINATORS = {
    "graph": "combinators",
    "nodes": [
        {"name": "sink", "op": "sink", "params": {"size": 4}},
        {"name": "window", "op": "local", "params": {"size": 9}},
        {"name": "past", "op": "causal"},
        {"name": "window_only", "op": "difference", "inputs": {"a": "window", "b": "sink"}},
        {"name": "scores", "op": "exact"},
        {"name": "heavy", "op": "topk", "inputs": {"scores": "scores"}, "params": {"k": 6}},
        {"name": "heavy_past", "op": "intersection", "inputs": {"a": "heavy", "b": "past"}},
        {"name": "more", "op": "topk", "inputs": {"scores": "scores", "prior": "sink"}, "params": {"k": 3}},
        {"name": "all", "op": "union", "inputs": {"masks": ["heavy_past", "window_only", "more", "sink"]}},
    ],
    "output": "all",
}


@pytest.mark.parametrize("gqa_heads", [(4, 2), (3, 3)])
def test_combinators_overlapping_selections_match_simulate(gqa_heads):
    """Overlapping parts (two top-k sets, a window minus the sink, a top-k cut by causality)
    are each attended once, as in simulate mode."""
    hq, hkv = gqa_heads
    graph = mg.load_graph(COMBINATORS)
    qs, ks, vs = inputs(2, hq, hkv, 7, 26, seed=43)
    sim, sp = mg.compile(graph), mg.compile(graph, mode="sparse")
    assert rel(sp(qs, ks, vs), sim(qs, ks, vs)) < 1e-4


def test_prefill_chunks_bound_the_gathered_and_scored_elements(calib):
    from maskgraph.sparse.runner import CHUNK_ELEMENTS

    for name in ("streaming_llm", "oracle_topk"):
        sp = mg.compile(load(name, calib, 8, 2), mode="sparse")
        q = torch.empty(1, 8, 4096, 64)
        k = torch.empty(1, 2, 4096, 64)
        chunk = sp._sparse.chunk_len(q, k)
        heavy = 0 if name == "streaming_llm" else 7
        gathered = 8 * chunk * heavy * 64  # (B, Hq, chunk, k, D) top-k keys
        scores = 8 * chunk * (4096 if name == "oracle_topk" else 0)  # (B, Hq, chunk, K)
        logits = 8 * chunk * (3 + 1000 + chunk)  # (B, Hq, chunk, sink + window + chunk)
        assert 1 <= chunk < 4096
        assert max(gathered, scores) <= CHUNK_ELEMENTS and logits <= 2 * CHUNK_ELEMENTS


# ----- GQA options ------------------------------------------------------------------------------
def test_shared_equals_per_head_without_grouping(calib):
    graph = load("oracle_topk", calib, 2, 2)
    qs, ks, vs = inputs(2, 2, 2, 3, 33, seed=19)
    a = mg.compile(graph, mode="sparse", gqa="per_head")(qs, ks, vs)
    b = mg.compile(graph, mode="sparse", gqa="shared")(qs, ks, vs)
    assert rel(b, a) < 1e-6


def reference_shared_oracle_topk(q, k, v, sink, window, heavy):
    """float64: per KV group, top-`heavy` keys by the max over the group's logits outside the
    sink and window; each query head attends over sink ∪ window ∪ that group selection."""
    b, hq, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    g = hq // hkv
    out = torch.zeros(b, hq, nq, d, dtype=torch.float64)
    for bi in range(b):
        for i in range(nq):
            t = nk - nq + i
            fixed = [j for j in range(nk) if j < sink or t - window < j <= t]
            for kv in range(hkv):
                logits = [
                    (q[bi, kv * g + x, i].double() @ k[bi, kv].double().T) / math.sqrt(d) for x in range(g)
                ]
                group = torch.stack(logits).amax(0)
                group[fixed] = float("-inf")
                picked = torch.topk(group, min(heavy, nk)).indices.tolist()
                keep = sorted(set(fixed) | {j for j in picked if group[j] > float("-inf")})
                for x in range(g):
                    w = torch.softmax(logits[x][keep], 0)
                    out[bi, kv * g + x, i] = w @ v[bi, kv, keep].double()
    return out


def test_shared_selection_against_float64_reference(calib):
    graph = load("oracle_topk", calib, 6, 2)
    qs, ks, vs = inputs(2, 6, 2, 3, 29, seed=23)
    got = mg.compile(graph, mode="sparse", gqa="shared")(qs, ks, vs)
    want = reference_shared_oracle_topk(qs, ks, vs, 3, 5, 7)
    assert rel(got, want) < 1e-5


def test_shared_quest_runs_and_differs_from_dense(calib):
    graph = load("quest", calib, 4, 2)
    qs, ks, vs = inputs(1, 4, 2, 1, 64, seed=29)
    out = mg.compile(graph, mode="sparse", gqa="shared")(qs, ks, vs)
    dense = mg.compile("graphs/dense.yaml")(qs, ks, vs)
    assert torch.isfinite(out).all() and rel(out, dense) > 1e-3


# ----- the gathered attention against float64 ---------------------------------------------------
@pytest.mark.parametrize("hsel", ["kv", "q"])
@pytest.mark.parametrize("with_sinks", [False, True])
def test_gathered_attention_against_float64(hsel, with_sinks):
    gen = torch.Generator().manual_seed(31)
    b, hq, hkv, nq, nk, n = 2, 4, 2, 3, 19, 6
    q = torch.randn(b, hq, nq, D, generator=gen)
    k = torch.randn(b, hkv, nk, D, generator=gen)
    v = torch.randn(b, hkv, nk, D, generator=gen)
    heads = hkv if hsel == "kv" else hq
    idx = torch.stack([torch.randperm(nk, generator=gen)[:n] for _ in range(b * heads * nq)]).view(
        b, heads, nq, n
    )
    valid = torch.rand(b, heads, nq, n, generator=gen) > 0.3
    valid[0, 0, 0] = False  # an empty row
    am = torch.zeros(b, 1, nq, nk)
    am[1, :, :, :5] = float("-inf")
    sinks = torch.randn(hq, generator=gen) if with_sinks else None
    out, empty = gathered_attention(q, k, v, am, 0.3, idx, valid, sinks)
    want = reference_gathered(q, k, v, am, 0.3, idx, valid, sinks)
    assert rel(out, want) < 1e-5
    assert torch.isfinite(out).all()
    assert int(empty) >= hq // heads  # the empty row (plus any fully masked by am)


# ----- refusals and options ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, node",
    [("oracle_topp", "heavy"), ("random_sampling", None), ("magicpig", None), ("vattention", None)],
)
def test_unsupported_graphs_say_which_node_and_why(name, node):
    try:
        graph = mg.load_graph(f"graphs/{name}.yaml")
    except (FileNotFoundError, UnknownOperatorError) as exc:
        pytest.skip(f"graph {name} not available yet: {exc}")
    with pytest.raises(NotSupportedError) as err:
        mg.compile(graph, mode="sparse")
    text = str(err.value)
    assert "mode='sparse'" in text and "node '" in text
    if node:
        assert f"node '{node}'" in text and "top-p" in text


def test_options_are_checked(calib):
    graph = load("streaming_llm", calib, 2, 1)
    with pytest.raises(NotSupportedError, match="gqa"):
        mg.compile(graph, mode="sparse", gqa="both")
    with pytest.raises(NotSupportedError, match="only apply to mode='sparse'"):
        mg.compile(graph, gqa="shared")
    with pytest.raises(NotSupportedError, match="unknown sparse option"):
        mg.compile(graph, mode="sparse", budget=3)


class KeyReads(torch.overrides.TorchFunctionMode):
    """Records the torch functions applied to one tensor (other than shape queries)."""

    HARMLESS = ("__get__", "size", "dim", "__len__")  # __get__: .shape, .device, .dtype

    def __init__(self, watched: torch.Tensor):
        super().__init__()
        self.watched = watched
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = list(args) + list(kwargs.values())
        if any(a is self.watched for a in flat):
            name = getattr(func, "__name__", str(func))
            if not any(h in name for h in self.HARMLESS):
                self.calls.append(name)
        return func(*args, **kwargs)


def key_reads(graph, b=1, hq=4, hkv=2, k=45) -> list[str]:
    """Functions the sparse runner applies to the whole key tensor at a decode step."""
    sp = mg.compile(graph, mode="sparse")
    qs, ks, vs = inputs(b, hq, hkv, 1, k, seed=41)
    prep = sp._prepare(ks, vs, mg.State(), 0)
    with KeyReads(ks) as mode:
        sp._sparse(qs, ks, vs, None, D**-0.5, prep, None, 0)
    return mode.calls


@pytest.mark.parametrize("name", [n for n in GRAPHS if not uses(n, "exact", "full")])
def test_estimators_read_only_the_gathered_keys(name, calib):
    """After prepare, the whole key tensor is only sliced (sink, window) and indexed (the
    gather), never scored: the estimator works from its caches. The oracle (exact) does read
    every key, as it must."""
    calls = key_reads(load(name, calib, 4, 2))
    assert calls and set(calls) <= {"narrow", "__getitem__"}, calls  # slices and the gather


def test_oracle_reads_every_key(calib):
    calls = key_reads(load("oracle_topk", calib, 4, 2))
    assert set(calls) - {"narrow", "__getitem__"}  # the logits of all keys


def test_page_scores_stay_at_page_granularity(calib):
    """Quest's pages are ranked as pages: no per-token expansion of the page scores."""
    from maskgraph.lowering import chunk as sparse_ops

    seen = []
    original = sparse_ops.token_scores

    def spy(ctx, scores):
        seen.append(scores.scores.shape[-1])
        return original(ctx, scores)

    graph = load("quest", calib, 4, 2)
    qs, ks, vs = inputs(1, 4, 2, 1, 37, seed=37)
    sp = mg.compile(graph, mode="sparse")
    sparse_ops.token_scores = spy
    try:
        out = sp(qs, ks, vs, state=mg.State())
    finally:
        sparse_ops.token_scores = original
    assert not seen
    assert torch.isfinite(out).all()


def test_budget_matches_gathered_size(calib):
    graph = load("quest", calib, 4, 2)
    sp = mg.compile(graph, mode="sparse")
    assert sp._sparse.budget(37) == 3 + 5 + 12
    graph = load("oracle_topk", calib, 4, 2, heavy_size=0.29)
    sp = mg.compile(graph, mode="sparse")
    assert sp._sparse.budget(100) == 3 + 5 + 29  # a decimal share floored as written, as Env.size
    from maskgraph.env import Env
    from maskgraph.lowering.chunk import SparseChunk
    from maskgraph.sparse.plan import run_plan

    runner = sp._sparse
    qs, ks, vs = inputs(1, 4, 2, 1, 100, seed=47)
    env = Env(qs, ks, vs, None, 0.25, torch.tensor([99]))
    chosen = run_plan(runner.steps, runner.output, SparseChunk(env, "per_head", 99), {}, runner.params)
    assert chosen.size == runner.budget(100)


# budgets that select nothing: fewer tokens than one page, a share of K that floors to 0
ZERO_BUDGETS = [("quest", {"heavy_size": 3}), ("oracle_topk", {"heavy_size": 0.01})]


@pytest.mark.parametrize("name,extra", ZERO_BUDGETS, ids=[n for n, _ in ZERO_BUDGETS])
def test_budget_that_selects_nothing_matches_simulate(name, extra, calib):
    graph = load(name, calib, 4, 2, **extra)
    qs, ks, vs = inputs(2, 4, 2, 1, 37, seed=48)
    simulated, sparse = both(graph, qs, ks, vs)[:2]
    assert rel(sparse, simulated) < 1e-5


@pytest.mark.parametrize("heavy", [16, 19, 20, 24])
def test_page_budget_past_the_keys_keeps_every_page(heavy, calib):
    """Quest's budget counts pages from the budget as given: 20 tokens over K = 19 keys in pages
    of 4 keep all five pages, the partial last one too, as simulate does (the budget was capped
    at K first, 19 // 4 = 4 pages; found by a review's fuzzing)."""
    graph = load("quest", calib, 4, 2, heavy_size=heavy, page_size=4)
    qs, ks, vs = inputs(1, 4, 2, 3, 19, seed=heavy)
    simulated, sparse = both(graph, qs, ks, vs)[:2]
    assert rel(sparse, simulated) < 1e-5
    assert mg.compile(graph, mode="sparse")._sparse.budget(19) == 3 + 5 + 4 * min(heavy // 4, 5)


def test_runs_that_all_floor_to_nothing_attend_no_key(calib):
    """A graph of runs only whose shares all floor to 0 at K = 3: zero output and every row
    counted empty, as in simulate mode (the torch path once reduced over zero keys)."""
    graph = load("streaming_llm", calib, 4, 2, sink_size=0.01, window_size=0.2)
    qs, ks, vs = inputs(2, 4, 2, 1, 3, seed=49)
    simulated, sparse, sim, sp = both(graph, qs, ks, vs)
    assert torch.equal(sparse, torch.zeros_like(sparse)) and rel(sparse, simulated) == 0
    assert int(sp.empty_rows) == int(sim.empty_rows) == 2 * 4


@pytest.mark.parametrize("k_now,page", [(37, 4), (40, 8), (5, 16), (64, 16), (70, 16)])
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("prior_kind", ["none", "spans", "selection"])
def test_page_eligibility_by_offsets_equals_the_reduction(k_now, page, with_mask, prior_kind):
    """The compiled form of Quest's page eligibility (an OR over page offsets, pointwise) equals
    the eager one (a reduction over each page), with K not a multiple of the page size."""
    from maskgraph.env import Env
    from maskgraph.lowering import chunk as sparse_ops
    from maskgraph.lowering import indexset
    from maskgraph.ops.combine import lower_union
    from maskgraph.ops.fixed import lower_local, lower_sink

    gen = torch.Generator().manual_seed(k_now * 31 + page + 7 * with_mask + len(prior_kind))
    b, hq, hkv, nq, d = 2, 4, 2, 3, 8
    q = torch.randn(b, hq, nq, d, generator=gen)
    kv = torch.randn(b, hkv, k_now, d, generator=gen)
    am = None
    if with_mask:  # forbid whole runs, so that some pages have no allowed key
        am = torch.zeros(b, 1, nq, k_now)
        am[0, ..., : k_now // 2] = float("-inf")
        am[1][torch.rand(1, nq, k_now, generator=gen) < 0.7] = float("-inf")
    env = Env(q, kv, kv, am, 1.0, torch.arange(k_now - nq, k_now), 0)
    ctx = sparse_ops.SparseChunk(env, "shared", k_now - nq)
    prior = None
    if prior_kind == "spans":
        sink = lower_sink(ctx, "sink", {}, {"size": page + 1}, None)
        local = lower_local(ctx, "local", {}, {"size": 2 * page}, None)
        prior = lower_union(ctx, "u", {"masks": [sink, local]}, {}, None)
    elif prior_kind == "selection":
        idx = torch.randint(0, k_now, (b, hkv, nq, 2 * page), generator=gen)
        valid = torch.rand(b, hkv, nq, 2 * page, generator=gen) < 0.8
        whole = min(page, k_now)  # the first page, whole
        idx[..., :whole], valid[..., :whole] = torch.arange(whole), True
        prior = indexset.selection_set("sel", idx, valid, k_now, frozenset())
    pages = -(-k_now // page)
    want = sparse_ops.page_eligible(ctx, prior, page, pages)
    if want is None:
        assert prior is None and am is None
        return
    got = sparse_ops.page_eligible_by_offsets(ctx, prior, page, pages, env.allowed)
    lead = torch.broadcast_shapes(want.shape, got.shape)
    assert torch.equal(got.expand(lead), want.expand(lead))
    assert not want.all()  # the case excludes some page (else the test could not fail)


# ----- compiled -----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name,extra", ZERO_BUDGETS, ids=[n for n, _ in ZERO_BUDGETS])
def test_inductor_budget_that_selects_nothing(name, extra, calib):
    """inductor failed to lower a top-k of zero pages (a budget below one page)."""
    graph = load(name, calib, 4, 2, **extra)
    qs, ks, vs = inputs(1, 4, 2, 1, 37, seed=49)
    ind = mg.compile(graph, backend="inductor", mode="sparse")
    assert rel(ind(qs, ks, vs), mg.compile(graph)(qs, ks, vs)) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["oracle_topk", "quest"])
def test_inductor_decode_matches_eager(name, calib):
    graph = load(name, calib, 4, 2)
    eager = mg.compile(graph, mode="sparse")
    ind = mg.compile(graph, backend="inductor", mode="sparse")
    for k_now in (40, 41, 42):
        qs, ks, vs = inputs(2, 4, 2, 1, k_now, seed=k_now)
        st_e, st_i = mg.State(), mg.State()
        assert rel(ind(qs, ks, vs, state=st_i), eager(qs, ks, vs, state=st_e)) < 1e-5


@pytest.mark.slow
def test_inductor_compiles_once_for_all_sizes_and_int_params(calib):
    """A decode loop (K growing) over two parameter settings of one graph: one compilation."""
    from torch._dynamo.utils import counters

    before = counters["stats"]["unique_graphs"]
    for heavy in (6, 9):
        graph = load("streaming_llm", calib, 4, 2, window_size=heavy)
        ind = mg.compile(graph, backend="inductor", mode="sparse", gqa="shared")
        eager = mg.compile(graph, mode="sparse", gqa="shared")
        for k_now in range(30, 36):
            qs, ks, vs = inputs(1, 4, 2, 1, k_now, seed=k_now)
            assert rel(ind(qs, ks, vs), eager(qs, ks, vs)) < 1e-5
    assert counters["stats"]["unique_graphs"] - before <= 1


# ----- the benchmark script -----------------------------------------------------------------------
def test_benchmark_quick_runs_on_cpu(tmp_path, monkeypatch, capsys):
    import importlib.util
    import json

    # the script puts benchmarks/ first on sys.path: a copy, restored afterwards
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("bench_sparse", "benchmarks/sparse.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setenv("OUT", str(tmp_path))
    rows = bench.main(["--quick", "--graphs", "streaming_llm", "quest", "no_such_graph"])
    printed = capsys.readouterr().out
    assert "| dense SDPA" in printed.split("## sparse mode")[-1]  # the table comes last
    names = {(r["graph"], r.get("gqa")) for r in rows if "error" not in r}
    assert {("dense SDPA", "-"), ("streaming_llm", "shared"), ("quest", "per_head")} <= names
    saved = json.loads((tmp_path / "sparse.json").read_text())
    assert saved["benchmark"] == "sparse" and len(saved["rows"]) == len(rows)
    for row in rows:
        if row["graph"] != "dense SDPA":
            assert 0 < row["n"] <= int(row["density"] * row["K"])
            assert row["bytes_ms"] > 0 and row["flops_ms"] > 0


def test_benchmark_scripts_shadow_no_package_transformers_imports():
    """The benchmark scripts put benchmarks/ first on sys.path; a script there named like a
    package transformers looks for (``kernels.py`` once was) broke importing its models."""
    import subprocess

    code = "import sys; sys.path.insert(0, 'benchmarks'); import transformers.activations"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


# ----- the operator guide's example runs in both modes ------------------------------------------
def guide_graph(tmp_path, **overrides) -> mg.Graph:
    """The YAML graph of docs/writing-an-operator.md (sink, window and ``strided``), as written."""
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[2] / "docs" / "writing-an-operator.md").read_text()
    path = tmp_path / "strided_local.yaml"
    path.write_text(guide.split("```yaml\n", 1)[1].split("```", 1)[0], encoding="utf-8")
    return mg.load_graph(str(path), overrides=overrides)


def strided_local_float64(q, k, v, am, sink: int, window: int, stride: int) -> torch.Tensor:
    """Attention over the keys the guide's graph keeps, written plainly in float64."""
    b, hq, nq, d = q.shape
    nk, g = k.shape[2], hq // k.shape[1]
    out = torch.zeros(b, hq, nq, d, dtype=torch.float64)
    for bi in range(b):
        for h in range(hq):
            for i in range(nq):
                t = nk - nq + i
                keep = [
                    j
                    for j in range(nk)
                    if (j < sink or t - window < j <= t or (j <= t and (t - j) % stride == 0))
                    and (am is None or am[bi, 0, i, j] > float("-inf"))
                ]
                logits = (
                    torch.stack([q[bi, h, i].double() @ k[bi, h // g, j].double() for j in keep]) * d**-0.5
                )
                out[bi, h, i] = torch.softmax(logits, 0) @ v[bi, h // g, keep].double()
    return out


@pytest.mark.parametrize("gqa, kernel", [("per_head", "torch"), ("shared", "torch"), ("per_head", "triton")])
@pytest.mark.parametrize("padded", [False, True], ids=["", "padded"])
def test_the_guides_strided_graph_runs_sparse(gqa, kernel, padded, tmp_path):
    """The guide's graph in sparse mode (``strided`` lowered to ⌈K / stride⌉ listed keys per
    query) against the float64 attention over its keys and against simulate mode: GQA, Q > 1,
    K not a multiple of the stride, overlapping sink, window and stride, bf16 and float32."""
    from maskgraph.triton_util import triton_installed

    if kernel == "triton" and not triton_installed():
        pytest.skip("needs triton with its interpreter on (tests/conftest.py)")
    sink, window, stride = 3, 6, 5
    graph = guide_graph(tmp_path, sink_size=sink, window_size=window, stride=stride)
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = inputs(2, 4, 2, 3, 47, dtype=dtype, seed=11 + padded)
        am = padding_mask(2, 3, 47, pad=4) if padded else None
        want = strided_local_float64(q, k, v, am, sink, window, stride)
        got = mg.compile(graph, mode="sparse", gqa=gqa, kernel=kernel)(q, k, v, attention_mask=am)
        simulate = mg.compile(graph)(q, k, v, attention_mask=am)
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        assert rel(got.double(), want) < tol and rel(got, simulate) < tol


def test_the_guides_graph_as_written_runs_sparse(tmp_path):
    """The guide's parameters as written (window 64, stride 16) over 300 keys: sparse equals simulate."""
    graph = guide_graph(tmp_path)
    q, k, v = inputs(1, 4, 2, 2, 300, seed=3)
    assert rel(mg.compile(graph, mode="sparse")(q, k, v), mg.compile(graph)(q, k, v)) < 1e-5
