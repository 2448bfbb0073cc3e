"""SnapKV, H2O and TOVA (operators that watch the queries and the attention) against float64
references written plainly here: kept sets, outputs, permanent eviction, isolation between
layers and requests, the feedback contract and the sparse-mode refusal."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

import maskgraph as mg
from maskgraph.attention import attend_with_feedback
from maskgraph.errors import GraphError, NotSupportedError
from maskgraph.ir import pyramid_size

D = 8
SCALE = D**-0.5


def rand(shape, seed, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def causal(q, k):
    """Additive (1, 1, Q, K): query i at position K − Q + i attends j ≤ its position."""
    i = torch.arange(k - q, k).view(-1, 1)
    return torch.where(torch.arange(k).view(1, -1) <= i, 0.0, float("-inf")).view(1, 1, q, k)


def one(op, **params):
    return mg.load_graph({"graph": op, "nodes": [{"name": "m", "op": op, "params": params}], "output": "m"})


def ref_attention(q, k, v, kept_kv, am=None):
    """float64 softmax attention of q (B, Hq, Q, D) over the keys kept per KV head
    (B, Hkv | 1, K) bool: (out (B, Hq, Q, D), probs (B, Hq, Q, K))."""
    b, hq, nq, _ = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    out = torch.zeros(b, hq, nq, D, dtype=torch.float64)
    probs = torch.zeros(b, hq, nq, nk, dtype=torch.float64)
    for bi in range(b):
        for h in range(hq):
            kv = h // (hq // hkv)
            keep = kept_kv[bi, kv if kept_kv.shape[1] > 1 else 0]
            for i in range(nq):
                s = (k[bi, kv].double() @ q[bi, h, i].double()) * SCALE
                if am is not None:
                    s = s + am[0, 0, i].double()
                s = s.masked_fill(~keep, float("-inf"))
                p = torch.softmax(s, dim=0)
                probs[bi, h, i] = p
                out[bi, h, i] = p @ v[bi, kv].double()
    return out, probs


def best(scores, eligible, n):
    """The n eligible positions of largest score, ties toward the lowest position (a sort)."""
    cands = [j for j in range(len(scores)) if eligible[j]]
    cands.sort(key=lambda j: (-float(scores[j]), j))
    return set(cands[:n])


# ----- SnapKV -------------------------------------------------------------------------------------
def ref_snapkv(q, k, window, kernel, budget):
    """Kept set (B, Hkv, K) bool of SnapKV over one prefill, in float64."""
    b, hq, nq, _ = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    g = hq // hkv
    w = min(window, nq)
    am = causal(nq, nk)
    kept = torch.zeros(b, hkv, nk, dtype=torch.bool)
    for bi in range(b):
        for kv in range(hkv):
            group = torch.zeros(nk - w, dtype=torch.float64)
            for h in range(kv * g, kv * g + g):
                votes = torch.zeros(nk - w, dtype=torch.float64)
                for i in range(nq - w, nq):
                    s = (k[bi, kv].double() @ q[bi, h, i].double()) * SCALE + am[0, 0, i].double()
                    votes += torch.softmax(s, dim=0)[: nk - w] / w
                pooled = torch.zeros(nk - w, dtype=torch.float64)
                for j in range(nk - w):  # zero-padded centred average
                    lo, hi = max(0, j - kernel // 2), min(nk - w, j - kernel // 2 + kernel)
                    pooled[j] = votes[lo:hi].sum() / kernel
                group += pooled / g
            chosen = best(group, [True] * (nk - w), budget)
            for j in chosen | set(range(nk - w, nk)):
                kept[bi, kv, j] = True
    return kept


SNAP_CASES = [  # (b, hq, hkv, prompt, window, kernel, budget)
    (1, 4, 2, 40, 8, 5, 6),
    (2, 6, 2, 37, 4, 7, 9),  # K not a multiple of anything
    (1, 2, 1, 20, 32, 3, 4),  # the window is longer than the prompt: every key kept
    (1, 4, 4, 25, 1, 1, 1),  # one query votes, no pooling
    (1, 4, 2, 30, 5, 4, 7),  # an even pool: j − 2 … j + 1
]


@pytest.mark.parametrize("b, hq, hkv, prompt, window, kernel, budget", SNAP_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_snapkv_reference(b, hq, hkv, prompt, window, kernel, budget, dtype):
    attn = mg.compile(one("snapkv", window_size=window, kernel_size=kernel, budget=budget))
    q, k, v = (
        rand((b, hq, prompt, D), 1, dtype),
        rand((b, hkv, prompt + 3, D), 2, dtype),
        rand((b, hkv, prompt + 3, D), 3, dtype),
    )
    state = mg.State()
    am = causal(prompt, prompt)
    first = attn(q, k[:, :, :prompt], v[:, :, :prompt], am, state=state)  # Q = K: the prefill
    every = torch.ones(b, hkv, prompt, dtype=torch.bool)
    want, _ = ref_attention(q, k[:, :, :prompt], v[:, :, :prompt], every, am)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(first.double(), want, atol=tol, rtol=tol)  # the prefill attends all
    kept = ref_snapkv(q, k[:, :, :prompt], window, kernel, budget)
    assert torch.equal(state.slot(0, "m")["next"], kept)
    for step in range(1, 4):  # decode steps (Q = 1) and one call of Q = 2
        n = prompt + step
        nq = 2 if step == 3 else 1
        qs = rand((b, hq, nq, D), 10 + step, dtype)
        out = attn(qs, k[:, :, :n], v[:, :, :n], causal(nq, n) if nq > 1 else None, state=state)
        keep = torch.cat([kept, torch.ones(b, hkv, n - prompt, dtype=torch.bool)], dim=2)
        want, _ = ref_attention(qs, k[:, :, :n], v[:, :, :n], keep, causal(nq, n) if nq > 1 else None)
        torch.testing.assert_close(out.double(), want, atol=tol, rtol=tol)


# ----- H2O and TOVA: a prefill then decode steps, the reference evicting by hand ------------------
@dataclass
class Call:
    """One call of :func:`run_steps`: its queries, key count, attention mask, output, mask."""

    queries: torch.Tensor
    n: int
    am: torch.Tensor | None
    out: torch.Tensor
    mask: torch.Tensor
    state: mg.State


def run_steps(attn, q0, k, v, steps, dtype):
    """Prefill (causal) then ``steps`` decode calls, one :class:`Call` each. The mask read
    after a call is the one read before it (what the eval measures is what the call attended)."""
    state = mg.State()
    prompt = q0.shape[2]
    calls = [(q0, prompt, causal(prompt, prompt))]
    calls += [
        (rand((q0.shape[0], q0.shape[1], 1, D), 100 + i, dtype), prompt + i, None)
        for i in range(1, steps + 1)
    ]
    for qs, n, am in calls:
        mask = attn.mask(qs, k[:, :, :n], v[:, :, :n], am, state=state)
        out = attn(qs, k[:, :, :n], v[:, :, :n], am, state=state)
        assert torch.equal(attn.mask(qs, k[:, :, :n], v[:, :, :n], am, state=state), mask)
        yield Call(qs, n, am, out, mask, state)


H2O_CASES = [  # (b, hq, hkv, prompt, heavy, recent, steps)
    (1, 4, 2, 20, 5, 3, 6),
    (2, 6, 3, 13, 4, 0.2, 5),
    (1, 2, 2, 9, 20, 20, 3),  # a budget past K: nothing evicted
]


@pytest.mark.parametrize("b, hq, hkv, prompt, heavy, recent, steps", H2O_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_h2o_reference(b, hq, hkv, prompt, heavy, recent, steps, dtype):
    attn = mg.compile(one("h2o", heavy_size=heavy, recent_size=recent), chunk_size=3)
    n_all = prompt + steps
    q0 = rand((b, hq, prompt, D), 1, dtype)
    k, v = rand((b, hkv, n_all, D), 2, dtype), rand((b, hkv, n_all, D), 3, dtype)
    kept = torch.ones(b, hkv, 0, dtype=torch.bool)
    score = torch.zeros(b, hkv, 0, dtype=torch.float64)
    g = hq // hkv
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for call in run_steps(attn, q0, k, v, steps, dtype):
        qs, n, am, out, mask, state = call.queries, call.n, call.am, call.out, call.mask, call.state
        kept = torch.cat([kept, torch.ones(b, hkv, n - kept.shape[2], dtype=torch.bool)], dim=2)
        score = torch.cat([score, torch.zeros(b, hkv, n - score.shape[2], dtype=torch.float64)], dim=2)
        assert torch.equal(mask > 0, kept.repeat_interleave(g, 1).unsqueeze(2).expand_as(mask))
        want, probs = ref_attention(qs, k[:, :, :n], v[:, :, :n], kept, am)
        torch.testing.assert_close(out.double(), want, atol=tol, rtol=tol)
        n_recent = recent if isinstance(recent, int) else int(recent * n)
        n_heavy = heavy if isinstance(heavy, int) else int(heavy * n)
        for bi in range(b):
            for kv in range(hkv):
                score[bi, kv] += probs[bi, kv * g : kv * g + g].sum(dim=(0, 1))
                old = [bool(kept[bi, kv, j]) and j < n - n_recent for j in range(n)]
                keep = best(score[bi, kv], old, n_heavy) | set(range(max(0, n - n_recent), n))
                kept[bi, kv] = torch.tensor([bool(kept[bi, kv, j]) and j in keep for j in range(n)])
        assert torch.equal(state.slot(0, "m")["next"], kept)


TOVA_CASES = [  # (b, hq, hkv, prompt, budget, steps)
    (1, 4, 2, 20, 8, 6),
    (2, 6, 3, 11, 0.5, 5),
    (1, 2, 1, 6, 30, 3),  # a budget past K: nothing evicted
]


@pytest.mark.parametrize("b, hq, hkv, prompt, budget, steps", TOVA_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tova_reference(b, hq, hkv, prompt, budget, steps, dtype):
    attn = mg.compile(one("tova", budget=budget))
    n_all = prompt + steps
    q0 = rand((b, hq, prompt, D), 1, dtype)
    k, v = rand((b, hkv, n_all, D), 2, dtype), rand((b, hkv, n_all, D), 3, dtype)
    kept = torch.ones(b, 1, 0, dtype=torch.bool)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for call in run_steps(attn, q0, k, v, steps, dtype):
        qs, n, am, out, mask, state = call.queries, call.n, call.am, call.out, call.mask, call.state
        kept = torch.cat([kept, torch.ones(b, 1, n - kept.shape[2], dtype=torch.bool)], dim=2)
        assert torch.equal(mask > 0, kept.unsqueeze(2).expand_as(mask))
        want, probs = ref_attention(qs, k[:, :, :n], v[:, :, :n], kept, am)
        torch.testing.assert_close(out.double(), want, atol=tol, rtol=tol)
        size = budget if isinstance(budget, int) else int(budget * n)
        for bi in range(b):
            last = probs[bi, :, -1].mean(dim=0)  # the last query, averaged over every head
            keep = best(last, [bool(x) for x in kept[bi, 0]], size)
            kept[bi, 0] = torch.tensor([j in keep for j in range(n)])
        assert torch.equal(state.slot(0, "m")["next"], kept)


@pytest.mark.parametrize("graph", [one("h2o", heavy_size=3, recent_size=2), one("tova", budget=5)])
def test_eviction_is_permanent(graph):
    """A key dropped after call t is attended by no later call, whatever its queries."""
    attn = mg.compile(graph)
    k, v = rand((1, 2, 40, D), 2), rand((1, 2, 40, D), 3)
    q0 = rand((1, 4, 10, D), 1)
    dropped = torch.zeros(1, 4, 40, dtype=torch.bool)
    evictions = 0
    for call in run_steps(attn, q0, k, v, 30, torch.float32):
        n, mask, state = call.n, call.mask, call.state
        attended = (mask > 0).any(2)
        assert not (attended & dropped[..., :n]).any()
        kept = state.slot(0, "m")["next"]
        now = ~kept.repeat_interleave(4 // kept.shape[1], 1)
        evictions += int(now.sum()) - int(dropped[..., :n].sum())
        dropped[..., :n] |= now
    assert evictions > 0


def test_state_is_per_layer_and_per_request():
    attn = mg.compile(one("h2o", heavy_size=2, recent_size=2))
    q, k, v = rand((1, 4, 8, D), 1), rand((1, 2, 8, D), 2), rand((1, 2, 8, D), 3)
    k2 = rand((1, 2, 8, D), 4)
    state = mg.State()
    attn(q, k, v, causal(8, 8), state=state, layer_idx=0)
    attn(q, k2, v, causal(8, 8), state=state, layer_idx=1)
    a, b = state.slot(0, "m")["next"], state.slot(1, "m")["next"]
    assert not torch.equal(a, b)  # other keys, other sets
    again = mg.State()  # a new request starts with every key, then evicts as the first did
    step_q, step_k = rand((1, 4, 1, D), 5), torch.cat([k, rand((1, 2, 1, D), 6)], dim=2)
    step_v = torch.cat([v, rand((1, 2, 1, D), 7)], dim=2)
    attn(q, k, v, causal(8, 8), state=again, layer_idx=0)
    assert torch.equal(again.slot(0, "m")["next"], a)
    torch.testing.assert_close(
        attn(step_q, step_k, step_v, state=state, layer_idx=0),
        attn(step_q, step_k, step_v, state=again, layer_idx=0),
    )
    assert len(again) == 1  # layer 1 untouched by the other request
    fresh = attn(step_q, step_k, step_v)  # without a State every call is a first call
    every = torch.ones(1, 2, 9, dtype=torch.bool)
    torch.testing.assert_close(
        fresh.double(), ref_attention(step_q, step_k, step_v, every)[0], atol=1e-5, rtol=1e-5
    )


# ----- the contract -------------------------------------------------------------------------------
def test_kept_cache_is_the_union_of_the_evicting_nodes_sets():
    """Two evicting nodes: the share any of them keeps, per query head; sets over other key
    counts are an error naming both nodes, not the later set alone."""
    graph = mg.load_graph(
        {
            "graph": "two",
            "nodes": [
                {"name": "a", "op": "h2o", "params": {"heavy_size": 2, "recent_size": 2}},
                {"name": "b", "op": "tova", "params": {"budget": 4}},
                {"name": "u", "op": "union", "inputs": {"masks": ["a", "b"]}},
            ],
            "output": "u",
        }
    )
    attn, state = mg.compile(graph), mg.State()
    a = torch.tensor([[[1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1]]], dtype=torch.bool)
    b = torch.tensor([[[0, 1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]]], dtype=torch.bool)
    state.slot(0, "a")["kept"], state.slot(0, "b")["kept"] = a, b
    assert attn.kept_cache(state, 0, 4) == [3 / 8, 3 / 8, 1 / 8, 1 / 8]
    state.slot(0, "b")["kept"] = torch.ones(1, 2, 9, dtype=torch.bool)
    with pytest.raises(
        mg.ShapeError, match=r"graph 'two', layer 0: node 'a' .*\(1, 4, 8\), node 'b' .*\(1, 4, 9\)"
    ):
        attn.kept_cache(state, 0, 4)


def test_a_rolled_cache_is_refused_where_an_operator_evicts():
    """A sliding-window cache that drops its oldest keys (kv_offset moves) would forget the
    evicted keys and keep every key again: refused, naming graph, node and operator."""
    attn = mg.compile(one("h2o", heavy_size=2, recent_size=2))
    q, k, v = rand((1, 4, 8, D), 1), rand((1, 2, 8, D), 2), rand((1, 2, 8, D), 3)
    state = mg.State()
    attn(q, k, v, causal(8, 8), state=state, layer_idx=0, kv_offset=0)
    step = rand((1, 4, 1, D), 4), rand((1, 2, 8, D), 5), rand((1, 2, 8, D), 6)
    attn(*step, state=state, layer_idx=0, kv_offset=None)  # unknown: taken as unchanged
    with pytest.raises(NotSupportedError, match=r"graph 'h2o', node 'm' \(op 'h2o'\).*rolled.*dense"):
        attn(*step, state=state, layer_idx=0, kv_offset=1)
    quest = mg.compile("quest")
    quest(*step, state=state, layer_idx=3, kv_offset=5)  # a key-side cache is rebuilt instead


@pytest.mark.parametrize("nq, nk", [(1, 9), (4, 9), (5, 5)])
def test_feedback_probabilities_reference(nq, nk):
    """key_mass and last are the normalised weights of the same attention, 1/p and sinks
    included, written here in float64."""
    logits = rand((2, 4, nq, nk), 1) * 3
    mask = (rand((2, 4, nq, nk), 2).abs() * 2).clamp(0, 1)  # probabilities, some 0 after clamp
    mask[..., 0] = 0.0
    v = rand((2, 2, nk, D), 3)
    sinks = rand((4,), 4)
    out, _, mass, last = attend_with_feedback(logits, mask, v, sinks)
    s = logits.double().masked_fill(mask == 0, float("-inf"))
    m = torch.maximum(s.amax(-1, keepdim=True), sinks.double().view(1, -1, 1, 1))
    w = torch.exp(s - m) / mask.double().clamp_min(1e-30) * (mask > 0)
    den = w.sum(-1, keepdim=True) + torch.exp(sinks.double().view(1, -1, 1, 1) - m)
    p = w / den
    torch.testing.assert_close(mass.double(), p.sum(2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last.double(), p[:, :, -1], atol=1e-5, rtol=1e-5)
    want = (p.view(2, 2, 2 * nq, nk) @ v.double()).view(2, 4, nq, D)
    torch.testing.assert_close(out.double(), want, atol=1e-5, rtol=1e-5)


def test_feedback_is_summed_over_query_chunks():
    """The mass a feedback operator gets does not depend on how queries are chunked."""
    q, k, v = rand((1, 4, 7, D), 1), rand((1, 2, 7, D), 2), rand((1, 2, 7, D), 3)
    sets = []
    for chunk in (1, 3, "auto"):
        state = mg.State()
        mg.compile(one("h2o", heavy_size=2, recent_size=1), chunk_size=chunk)(
            q, k, v, causal(7, 7), state=state
        )
        sets.append(state.slot(0, "m")["next"])
        torch.testing.assert_close(
            state.slot(0, "m")["score"].sum(), torch.tensor(4 * 7.0), atol=1e-4, rtol=0
        )  # each query: 1
    assert all(torch.equal(s, sets[0]) for s in sets)


def test_observe_dense_is_the_graphs_first_call():
    """A prefill shown to the operators while dense attention runs elsewhere leaves the State
    the graph's own first call leaves (its first call attends every key the mask allows)."""
    for graph in (
        one("h2o", heavy_size=3, recent_size=2),
        one("tova", budget=4),
        one("snapkv", window_size=3, kernel_size=3, budget=4),
    ):
        attn = mg.compile(graph)
        q, k, v = rand((1, 4, 12, D), 1), rand((1, 2, 12, D), 2), rand((1, 2, 12, D), 3)
        seen, ran = mg.State(), mg.State()
        attn.observe_dense(q, k, v, None, None, seen)  # None: causal
        attn(q, k, v, causal(12, 12), state=ran)
        assert torch.equal(seen.slot(0, "m")["next"], ran.slot(0, "m")["next"]), graph.name


@pytest.mark.parametrize(
    "op, params, why", [("h2o", {}, "feedback"), ("tova", {}, "feedback"), ("snapkv", {}, "simulate")]
)
def test_sparse_mode_refuses_with_the_reason(op, params, why):
    with pytest.raises(NotSupportedError, match=why) as info:
        mg.compile(one(op, **params), mode="sparse")
    assert "'m'" in str(info.value)


def test_an_operator_that_watches_needs_prepare():
    with pytest.raises(ValueError, match="need prepare"):
        mg.operator("watch_nothing", family="selector", output=mg.PortType.MASK, observes=True)(
            lambda env: None
        )


# ----- PyramidKV: the layer rule ------------------------------------------------------------------
@pytest.mark.parametrize(
    "mean, beta, layers", [(0.1, 20, 24), (0.3, 5, 7), (0.8, 20, 4), (64, 20, 10), (100, 1, 3)]
)
def test_pyramid_sizes(mean, beta, layers):
    sizes = [pyramid_size(mean, beta, i, layers) for i in range(layers)]
    assert all(a >= b for a, b in zip(sizes, sizes[1:]))  # shrinks with depth
    if isinstance(mean, float):
        high = min(1.0, 2 * mean - mean / beta)
        low = mean / beta if high < 1.0 else 2 * mean - 1.0
        want = [high - i * (high - low) / (layers - 1) for i in range(layers)]
        assert sizes == pytest.approx(want)
        assert sum(sizes) / layers == pytest.approx(mean)
    else:
        low = mean / beta
        want = [
            max(1, round(2 * mean - low - i * (2 * mean - 2 * low) / (layers - 1))) for i in range(layers)
        ]
        assert sizes == want


def test_pyramid_graph_gives_each_layer_its_budget():
    g = mg.load_graph("pyramidkv", overrides={"budget": 0.2})
    budgets = [g.for_layer(i, 4).params["budget"] for i in range(4)]
    assert budgets == pytest.approx([0.39 - i * 0.38 / 3 for i in range(4)])
    with pytest.raises(mg.MaskgraphError, match=r"graph 'pyramidkv'.*'layers.pyramid'.*pass num_layers"):
        g.for_layer(0)  # the rule cannot be applied without the layer count
    assert mg.compile(g).graph.params["budget"] == 0.2  # compiled whole: the mean (docs/methods/pyramidkv.md)
    assert mg.load_graph(g.to_yaml()) == g  # the rule round-trips
    g.layers.overrides[1] = {"budget": 0.5}
    assert g.for_layer(1).params["budget"] == 0.5  # a layer's own value needs no layer count


@pytest.mark.parametrize(
    "rule, match",
    [
        ({"param": "nope"}, "unknown graph parameter"),
        ({"param": "window_size", "beta": 0.5}, "beta"),
        ({"param": "kernel_size", "beta": 20, "x": 1}, "mapping"),
        ({"param": "name"}, "must hold a size"),
    ],
)
def test_pyramid_rule_errors(rule, match):
    text = {
        "graph": "p",
        "params": {"window_size": 4, "kernel_size": 3, "name": "x"},
        "nodes": [{"name": "m", "op": "snapkv", "params": {"window_size": "$window_size"}}],
        "output": "m",
        "layers": {"pyramid": rule},
    }
    with pytest.raises(GraphError, match=match):
        mg.load_graph(text)


# ----- SnapKV with Quest among its keys -----------------------------------------------------------
def test_snapkv_quest_attends_quest_pages_among_the_kept_keys():
    params = {
        "snap_window": 4,
        "kernel_size": 3,
        "snap_budget": 10,
        "sink_size": 2,
        "window_size": 3,
        "heavy_size": 8,
        "page_size": 4,
    }
    attn = mg.compile("snapkv_quest", overrides=params)
    b, hq, hkv, prompt = 1, 4, 2, 45
    q0, k, v = rand((b, hq, prompt, D), 1), rand((b, hkv, prompt + 1, D), 2), rand((b, hkv, prompt + 1, D), 3)
    state = mg.State()
    attn(q0, k[:, :, :prompt], v[:, :, :prompt], causal(prompt, prompt), state=state)
    kept = torch.cat(
        [ref_snapkv(q0, k[:, :, :prompt], 4, 3, 10), torch.ones(b, hkv, 1, dtype=torch.bool)], dim=2
    )
    qs, n = rand((b, hq, 1, D), 5), prompt + 1
    mask = attn.mask(qs, k, v, state=state)
    for h in range(hq):
        kv = h // 2
        keys = k[0, kv].double()
        fixed = set(range(2)) | set(range(n - 3, n))
        own = {j for j in fixed if kept[0, kv, j]}
        eligible = [bool(kept[0, kv, j]) and j not in fixed for j in range(n)]
        bounds = []
        for page in range(0, n, 4):  # Quest's bound of the page, from all its keys
            lo, hi = keys[page : page + 4].min(0).values, keys[page : page + 4].max(0).values
            qd = qs[0, h, 0].double()
            u = float(torch.maximum(qd * lo, qd * hi).sum())
            bounds.append(u if any(eligible[page : page + 4]) else -math.inf)
        pages = best(bounds, [x > -math.inf for x in bounds], 8 // 4)
        heavy = {j for p in pages for j in range(p * 4, min(n, p * 4 + 4)) if eligible[j]}
        assert {int(j) for j in torch.nonzero(mask[0, h, 0]).flatten()} == own | heavy, h


def test_density_sweep_sets_the_eviction_budgets():
    from maskgraph.eval.sweep import sweep_overrides

    snap = mg.load_graph("snapkv").params
    assert sweep_overrides(snap, 0.2, 1000) == {"budget": pytest.approx(0.2 - 32 / 1000)}
    assert sweep_overrides(mg.load_graph("tova").params, 0.05, 1000) == {"budget": 0.05}
    assert sweep_overrides(mg.load_graph("h2o").params, 0.2, 1000) == {"heavy_size": 0.1, "recent_size": 0.1}
    both = sweep_overrides(mg.load_graph("snapkv_quest").params, 0.2, 1000)  # Quest's knobs
    assert set(both) == {"sink_size", "window_size", "heavy_size"}
