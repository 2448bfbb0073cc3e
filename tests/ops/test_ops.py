"""Core operators (fixed patterns, exact scores, top-k, top-p, combinators) against plain references."""

from __future__ import annotations

import pytest
import torch

import maskgraph as mg


def one_node(op, **params):
    return {"graph": f"just_{op}", "nodes": [{"name": "n", "op": op, "params": params}], "output": "n"}


def mask_of(graph, q, k, v=None, am=None):
    return mg.compile(mg.load_graph(graph)).mask(q, k, k if v is None else v, attention_mask=am)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def as_sets(mask2d):
    return [set(torch.nonzero(row).flatten().tolist()) for row in mask2d]


# ----- fixed patterns ---------------------------------------------------------------------------
def test_local_window_example_from_the_issue():
    q, k = rand(1, 1, 3, 4), rand(1, 1, 8, 4)
    m = mask_of(one_node("local", size=2), q, k)
    assert as_sets(m[0, 0]) == [{4, 5}, {5, 6}, {6, 7}]


@pytest.mark.parametrize("w, nq, nk", [(1, 1, 5), (3, 4, 4), (4, 2, 9), (20, 3, 7)])
def test_local_window_reference(w, nq, nk):
    m = mask_of(one_node("local", size=w), rand(2, 4, nq, 4), rand(2, 2, nk, 4))
    assert m.shape == (2, 4, nq, nk)
    for i in range(nq):
        t = nk - nq + i
        expect = {j for j in range(nk) if t - w < j <= t}
        assert as_sets(m[1, 3])[i] == expect


def test_sink_keeps_first_keys_for_every_query():
    m = mask_of(one_node("sink", size=3), rand(1, 2, 4, 4), rand(1, 2, 10, 4))
    assert all(s == {0, 1, 2} for s in as_sets(m.reshape(-1, 10)))


def test_sink_larger_than_k_keeps_all():
    m = mask_of(one_node("sink", size=50), rand(1, 1, 1, 4), rand(1, 1, 6, 4))
    assert m.sum() == 6


def test_causal_reference():
    m = mask_of(one_node("causal"), rand(1, 1, 3, 4), rand(1, 1, 7, 4))
    assert as_sets(m[0, 0]) == [set(range(5)), set(range(6)), set(range(7))]


def test_full_keeps_everything():
    m = mask_of(one_node("full"), rand(2, 2, 3, 4), rand(2, 1, 5, 4))
    assert torch.equal(m, torch.ones(2, 2, 3, 5))


@pytest.mark.parametrize(
    "size, nk, expect",
    [
        (0.5, 10, 5),
        (0.25, 10, 2),
        (0.99, 10, 9),
        (1.0, 7, 7),
        (0.1, 9, 0),
        (3, 10, 3),
        (1, 10, 1),
        (0.29, 100, 29),  # 0.29 * 100 == 28.999999999999996 in binary: floored as written
        (0.57, 100, 57),
        (0.58, 100, 58),
    ],
)
def test_size_semantics_int_tokens_float_share_floored(size, nk, expect):
    m = mask_of(one_node("sink", size=size), rand(1, 1, 1, 4), rand(1, 1, nk, 4))
    assert int(m.sum()) == expect


# ----- top-k ------------------------------------------------------------------------------------
def topk_graph(k, prior_size=None):
    nodes = [{"name": "s", "op": "exact"}]
    inputs = {"scores": "s"}
    if prior_size is not None:
        nodes.append({"name": "pr", "op": "sink", "params": {"size": prior_size}})
        inputs["prior"] = "pr"
    nodes.append({"name": "t", "op": "topk", "inputs": inputs, "params": {"k": k}})
    return {"graph": "tk", "nodes": nodes, "output": "t"}


@pytest.mark.parametrize("k", [1, 3, 0.5])
@pytest.mark.parametrize("prior", [None, 2])
def test_topk_selects_highest_new_keys(k, prior):
    b, hq, hkv, nq, nk = 2, 4, 2, 3, 11
    q, key = rand(b, hq, nq, 8, seed=1), rand(b, hkv, nk, 8, seed=2)
    am = torch.zeros(b, 1, nq, nk)
    am[0, 0, 1, 7:] = float("-inf")  # forbidden keys for one row
    m = mask_of(topk_graph(k, prior), q, key, am=am)
    n = k if isinstance(k, int) else int(k * nk)
    logits = torch.einsum("bhqd,bhkd->bhqk", q.double(), key.double().repeat_interleave(2, dim=1)) * 8**-0.5
    for bi in range(b):
        for h in range(hq):
            for i in range(nq):
                allowed = [j for j in range(nk) if am[bi, 0, i, j] == 0 and (prior is None or j >= prior)]
                ranked = sorted(allowed, key=lambda j: -logits[bi, h, i, j].item())
                assert as_sets(m[bi, h])[i] == set(ranked[: min(n, len(allowed))])


def test_topk_returns_min_k_eligible_when_few_eligible():
    q, key = rand(1, 1, 1, 4), rand(1, 1, 6, 4)
    am = torch.full((1, 1, 1, 6), float("-inf"))
    am[..., [1, 4]] = 0.0
    m = mask_of(topk_graph(5), q, key, am=am)
    assert as_sets(m[0, 0]) == [{1, 4}]


def test_topk_all_prior_selects_nothing():
    m = mask_of(topk_graph(3, prior_size=20), rand(1, 1, 2, 4), rand(1, 1, 6, 4))
    assert m.sum() == 0


def test_topk_mask_is_zero_one():
    m = mask_of(topk_graph(0.3), rand(1, 2, 3, 4), rand(1, 2, 20, 4))
    assert set(m.unique().tolist()) <= {0.0, 1.0}


# ----- top-p ------------------------------------------------------------------------------------
def topp_mask_for_scores(scores, p, prior=None):
    """Run the topp operator on given scores (B,Hq,Q,K) directly through an Env."""
    from maskgraph.env import Env
    from maskgraph.registry import get_op

    b, h, nq, nk = scores.shape
    env = Env(
        torch.zeros(b, h, nq, 1),
        torch.zeros(b, h, nk, 1),
        torch.zeros(b, h, nk, 1),
        None,
        1.0,
        torch.arange(nk - nq, nk),
    )
    return get_op("topp").fn(env, scores=scores, prior=prior, p=p)


def test_topp_hand_example():
    # softmax of log([0.5, 0.3, 0.15, 0.05]) = those shares.
    s = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().view(1, 1, 1, 4)
    assert as_sets(topp_mask_for_scores(s, 0.5)[0, 0]) == [{0}]  # 0.5 reaches 0.5
    assert as_sets(topp_mask_for_scores(s, 0.6)[0, 0]) == [{0, 1}]  # 0.5 < 0.6 ≤ 0.8
    assert as_sets(topp_mask_for_scores(s, 0.9)[0, 0]) == [{0, 1, 2}]  # 0.8 < 0.9 ≤ 0.95
    assert as_sets(topp_mask_for_scores(s, 1.0)[0, 0]) == [{0, 1, 2, 3}]
    assert as_sets(topp_mask_for_scores(s, 0.01)[0, 0]) == [{0}]  # never empty


def test_topp_mass_is_over_the_residual_keys():
    # Key 0 (mass 0.5) is in the prior; residual shares are 0.6, 0.3, 0.1 over keys 1..3.
    s = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().view(1, 1, 1, 4)
    prior = torch.tensor([1.0, 0, 0, 0]).view(1, 1, 1, 4)
    assert as_sets(topp_mask_for_scores(s, 0.6, prior)[0, 0]) == [{1}]
    assert as_sets(topp_mask_for_scores(s, 0.7, prior)[0, 0]) == [{1, 2}]
    assert as_sets(topp_mask_for_scores(s, 0.95, prior)[0, 0]) == [{1, 2, 3}]


def test_topp_ignores_ineligible_keys_and_empty_rows():
    s = torch.tensor([[0.0, float("-inf"), 1.0], [float("-inf")] * 3]).view(1, 1, 2, 3)
    m = topp_mask_for_scores(s, 0.99)
    assert as_sets(m[0, 0]) == [{0, 2}, set()]
    assert not torch.isnan(m).any()


def test_topp_reference_random():
    gen = torch.Generator().manual_seed(4)
    s = torch.randn(2, 3, 4, 9, generator=gen) * 2
    m = topp_mask_for_scores(s, 0.7)
    for row_s, row_m in zip(s.reshape(-1, 9), m.reshape(-1, 9)):
        probs = torch.softmax(row_s.double(), -1)
        order = torch.argsort(probs, descending=True).tolist()
        chosen, mass = set(), 0.0
        for j in order:
            if mass >= 0.7:
                break
            chosen.add(j)
            mass += probs[j].item()
        assert set(torch.nonzero(row_m).flatten().tolist()) == chosen


# ----- combinators ------------------------------------------------------------------------------
def combine(op, a, b):
    from maskgraph.registry import get_op

    fn = get_op(op).fn
    return fn(None, masks=[a, b]) if op == "union" else fn(None, a=a, b=b)


A = torch.tensor([0.0, 1.0, 0.5, 1.0, 0.0, 0.25])
B = torch.tensor([0.0, 0.0, 0.75, 1.0, 1.0, 0.5])


def test_union_is_clamped_sum():
    assert torch.equal(combine("union", A, B), torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 0.75]))


def test_union_of_zero_one_masks_is_or():
    a, b = torch.tensor([0.0, 1, 0, 1]), torch.tensor([0.0, 0, 1, 1])
    assert torch.equal(combine("union", a, b), torch.tensor([0.0, 1, 1, 1]))


def test_intersection_is_min():
    assert torch.equal(combine("intersection", A, B), torch.tensor([0.0, 0.0, 0.5, 1.0, 0.0, 0.25]))


def test_difference_keeps_a_where_b_is_zero():
    assert torch.equal(combine("difference", A, B), torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0]))


def test_union_variadic_and_broadcasting_through_a_graph():
    g = {
        "graph": "u",
        "nodes": [
            {"name": "a", "op": "sink", "params": {"size": 1}},
            {"name": "b", "op": "local", "params": {"size": 1}},
            {"name": "c", "op": "causal"},
            {"name": "d", "op": "difference", "inputs": {"a": "c", "b": "b"}},
            {"name": "e", "op": "intersection", "inputs": {"a": "d", "b": "c"}},
            {"name": "u", "op": "union", "inputs": {"masks": ["a", "b", "e"]}},
        ],
        "output": "u",
    }
    m = mask_of(g, rand(1, 2, 2, 4), rand(1, 1, 5, 4))
    assert m.shape == (1, 2, 2, 5)
    assert as_sets(m[0, 1]) == [{0, 1, 2, 3}, {0, 1, 2, 3, 4}]


# ----- shipped graphs ---------------------------------------------------------------------------
def test_streaming_llm_is_sink_or_window():
    g = mg.load_graph("streaming_llm", overrides={"sink_size": 2, "window_size": 3})
    m = mask_of(g, rand(1, 1, 2, 4), rand(1, 1, 10, 4))
    assert as_sets(m[0, 0]) == [{0, 1, 6, 7, 8}, {0, 1, 7, 8, 9}]


def test_oracle_topk_adds_exactly_k_new_keys():
    g = mg.load_graph("oracle_topk", overrides={"sink_size": 2, "window_size": 3, "heavy_size": 4})
    m = mask_of(g, rand(1, 2, 3, 8), rand(1, 1, 30, 8))
    assert (m.sum(-1) == 2 + 3 + 4).all()


@pytest.mark.parametrize("stride, nq, nk", [(1, 2, 5), (3, 3, 10), (4, 1, 9), (50, 2, 7)])
def test_strided_reference(stride, nq, nk):
    m = mask_of(one_node("strided", stride=stride), rand(1, 4, nq, 4), rand(1, 2, nk, 4))
    assert m.shape == (1, 4, nq, nk)
    for i in range(nq):
        t = nk - nq + i
        assert as_sets(m[0, 2])[i] == {j for j in range(nk) if j <= t and (t - j) % stride == 0}


def test_strided_example():
    m = mask_of(one_node("strided", stride=3), rand(1, 1, 2, 4), rand(1, 1, 9, 4))
    assert as_sets(m[0, 0]) == [{1, 4, 7}, {2, 5, 8}]


@pytest.mark.parametrize("graph", ["oracle_topk", "oracle_topp"])
def test_bf16_inputs_select_as_their_float32_values(graph):
    """Logits are accumulated in float32, so bf16 inputs select what their f32 casts select."""
    g = mg.load_graph(graph, overrides={"sink_size": 2, "window_size": 3})
    q, k, v = rand(2, 4, 3, 16, seed=1), rand(2, 2, 29, 16, seed=2), rand(2, 2, 29, 16, seed=3)
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    attn = mg.compile(g)
    assert torch.equal(attn.mask(qb, kb, vb), attn.mask(qb.float(), kb.float(), vb.float()))
    out = attn(qb, kb, vb)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), attn(qb.float(), kb.float(), vb.float()), atol=1e-2, rtol=1e-2)


def test_concepts_worked_example():
    """The example worked by hand in docs/concepts.md."""
    s = torch.tensor([2.0, 0.1, 1.5, -1.0, 0.3, 0.0, 0.5, 1.0])
    q = torch.zeros(1, 1, 1, 4)
    q[..., 0] = 1
    k = torch.zeros(1, 1, 8, 4)
    k[0, 0, :, 0] = s
    v = torch.arange(8.0).view(1, 1, 8, 1).repeat(1, 1, 1, 4)
    attn = mg.compile("oracle_topk", overrides={"sink_size": 1, "window_size": 2, "heavy_size": 2})
    assert attn.mask(q, k, v, scaling=1.0).flatten().tolist() == [1, 0, 1, 0, 1, 0, 1, 1]
    torch.testing.assert_close(
        attn(q, k, v, scaling=1.0), torch.full((1, 1, 1, 4), 2.4610), atol=1e-4, rtol=0
    )
    dense = mg.compile("dense")(q, k, v, scaling=1.0)
    torch.testing.assert_close(dense, torch.full((1, 1, 1, 4), 2.5170), atol=1e-4, rtol=0)
    from maskgraph.attention import attend, gqa_logits

    p = torch.tensor([1.0, 0, 1, 0, 1, 0.5, 1, 1]).view(1, 1, 1, 8)
    out, _ = attend(gqa_logits(q, k, 1.0), p, v)
    torch.testing.assert_close(out, torch.full((1, 1, 1, 4), 2.7202), atol=1e-4, rtol=0)
