"""Quest page bounds and page-granular top-k against float64 references."""

from __future__ import annotations

import pytest
import torch

import maskgraph as mg
from maskgraph.env import Env
from maskgraph.ops.zoo.quest import quantise_bounds

D = 8


def make(b, hq, hkv, q, k, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, hq, q, D, generator=gen).to(dtype),
        torch.randn(b, hkv, k, D, generator=gen).to(dtype),
        torch.randn(b, hkv, k, D, generator=gen).to(dtype),
    )


def quest_scores(queries, keys, page_size, label_bits=16, am=None):
    spec = mg.get_op("quest")
    params = {"page_size": page_size, "label_bits": label_bits}
    prep = spec.prepare(keys, keys, params, {}, 0)
    k = keys.shape[2]
    env = Env(queries, keys, keys, am, D**-0.5, torch.arange(k - queries.shape[2], k))
    return spec.fn(env, **params, prep=prep)


def reference_bound(queries, keys, page_size):
    """float64 scaling·Σ_d max(q_d·min_d, q_d·max_d) per token, written plainly."""
    q, k = queries.double(), keys.double()
    b, hq, nq, _ = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    out = torch.empty(b, hq, nq, nk, dtype=torch.float64)
    for h in range(hq):
        kv = h // (hq // hkv)
        for start in range(0, nk, page_size):
            page = k[:, kv, start : start + page_size]  # (b, n, D)
            lo, hi = page.min(1).values, page.max(1).values  # (b, D)
            qb = q[:, h]  # (b, nq, D)
            u = torch.maximum(qb * lo[:, None], qb * hi[:, None]).sum(-1)
            out[:, h, :, start : start + page_size] = (u * D**-0.5)[..., None]
    return out


CASES = [  # (b, hq, hkv, q, k, page)
    (1, 4, 2, 1, 37, 8),
    (2, 6, 2, 5, 37, 4),
    (1, 4, 1, 13, 13, 5),  # Q = K
    (1, 2, 2, 3, 16, 16),
    (1, 4, 2, 2, 3, 16),  # one partial page only
]


@pytest.mark.parametrize("b,hq,hkv,q,k,page", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bound_matches_float64_reference(b, hq, hkv, q, k, page, dtype):
    queries, keys, _ = make(b, hq, hkv, q, k, dtype, seed=k + q)
    got = quest_scores(queries, keys, page)
    want = reference_bound(queries, keys, page)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("b,hq,hkv,q,k,page", CASES)
@pytest.mark.parametrize("bits", [16, 4, 1])
def test_bound_at_least_every_logit_in_its_page(b, hq, hkv, q, k, page, bits):
    queries, keys, _ = make(b, hq, hkv, q, k, seed=7 * k)
    got = quest_scores(queries, keys, page, label_bits=bits).double()
    logits = torch.einsum("bhqd,bhkd->bhqk", queries.double(), keys.double().repeat_interleave(hq // hkv, 1))
    assert (got >= logits * D**-0.5 - 1e-5).all()
    if bits < 16:  # quantising outwards only loosens the bound
        assert (got >= quest_scores(queries, keys, page).double() - 1e-5).all()


def test_quantised_bounds_on_grid():
    lo = torch.randn(2, 3, 5, D)
    hi = lo + torch.rand(2, 3, 5, D)
    qlo, qhi = quantise_bounds(lo, hi, 2)
    base, top = lo.amin(-1, keepdim=True), hi.amax(-1, keepdim=True)
    levels = torch.cat([qlo, qhi], -1).sub(base).div((top - base) / 3)
    assert (qlo <= lo).all() and (qhi >= hi).all()
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    assert quantise_bounds(lo, hi, 16) == (lo, hi)


def test_forbidden_tokens_and_empty_pages():
    queries, keys, _ = make(1, 4, 2, 2, 20, seed=3)
    am = torch.zeros(1, 1, 2, 20)
    am[..., 4:8] = float("-inf")  # page 1 fully forbidden
    am[..., 9] = float("-inf")  # one token of page 2
    got = quest_scores(queries, keys, 4, am=am)
    assert (got[..., 4:8] == float("-inf")).all() and (got[..., 9] == float("-inf")).all()
    free = quest_scores(queries, keys, 4)
    assert torch.equal(got[..., 8], free[..., 8]) and torch.equal(got[..., 10:], free[..., 10:])


# ----- topk_pages ---------------------------------------------------------------------------------
def topk_pages_mask(scores, k, page, prior=None, am=None):
    spec = mg.get_op("topk_pages")
    b, hq, q, nk = scores.shape
    queries = torch.zeros(b, hq, q, D)
    keys = torch.zeros(b, 1, nk, D)
    env = Env(queries, keys, keys, am, 1.0, torch.arange(nk - q, nk))
    return spec.fn(env, scores=scores, prior=prior, k=k, page_size=page)


def reference_pages(scores, k, page, prior=None, am=None):
    """Plain loops: page score = max eligible token; best k // page pages with an eligible key."""
    b, hq, q, nk = scores.shape
    ok = torch.ones_like(scores, dtype=torch.bool)
    if prior is not None:
        ok &= ~(prior.expand_as(scores) > 0)
    if am is not None:
        ok &= am.expand_as(scores) > float("-inf")
    out = torch.zeros_like(scores)
    n_pages = -(-nk // page)
    for i in range(b):
        for h in range(hq):
            for t in range(q):
                ranked = []
                for p in range(n_pages):
                    sl = slice(p * page, min(nk, (p + 1) * page))
                    if ok[i, h, t, sl].any():
                        ranked.append((scores[i, h, t, sl][ok[i, h, t, sl]].max().item(), p))
                for _, p in sorted(ranked, reverse=True)[: k // page]:
                    sl = slice(p * page, min(nk, (p + 1) * page))
                    out[i, h, t, sl] = ok[i, h, t, sl].float()
    return out


@pytest.mark.parametrize("nk,page,k", [(37, 8, 16), (37, 8, 30), (20, 4, 100), (9, 1, 4), (5, 16, 16)])
def test_topk_pages_matches_reference(nk, page, k):
    gen = torch.Generator().manual_seed(nk + k)
    scores = torch.randn(2, 3, 4, nk, generator=gen)
    prior = (torch.rand(1, 1, 4, nk, generator=gen) < 0.3).float()
    am = torch.zeros(1, 1, 4, nk).masked_fill(torch.rand(1, 1, 4, nk, generator=gen) < 0.2, float("-inf"))
    am[..., : min(page, nk)] = float("-inf")  # page 0 has no allowed key: never chosen
    got = topk_pages_mask(scores, k, page, prior, am)
    assert torch.equal(got, reference_pages(scores, k, page, prior, am))
    assert (got[..., : min(page, nk)] == 0).all()


def test_partial_last_page_selectable():
    scores = torch.zeros(1, 1, 1, 37)
    scores[..., 32:] = 5.0  # the last page holds 5 keys
    got = topk_pages_mask(scores, 8, 8)
    assert got[0, 0, 0].nonzero().flatten().tolist() == list(range(32, 37))


def test_budget_smaller_than_a_page_selects_nothing():
    assert topk_pages_mask(torch.randn(1, 2, 3, 20), 3, 4).sum() == 0


@pytest.mark.parametrize("q,k", [(1, 40), (4, 40), (24, 24)])
def test_page_size_one_selects_exact_topk(q, k):
    o = {"sink_size": 2, "window_size": 3, "heavy_size": 7}
    quest = mg.compile(mg.load_graph("graphs/quest.yaml", overrides={**o, "page_size": 1}))
    oracle = mg.compile(mg.load_graph("graphs/oracle_topk.yaml", overrides=o))
    queries, keys, values = make(2, 4, 2, q, k, seed=q)
    pos = torch.arange(k - q, k).view(-1, 1)
    am = torch.zeros(1, 1, q, k).masked_fill(torch.arange(k).view(1, -1) > pos, float("-inf"))
    got = quest.mask(queries, keys, values, attention_mask=am)
    assert torch.equal(got, oracle.mask(queries, keys, values, attention_mask=am))
    assert got.sum() > 0


def test_quest_graph_selects_whole_pages():
    o = {"sink_size": 1, "window_size": 1, "heavy_size": 8, "page_size": 4}
    queries, keys, values = make(1, 2, 1, 1, 64, seed=5)
    mask = mg.compile(mg.load_graph("graphs/quest.yaml", overrides=o)).mask(queries, keys, values)
    heavy = mask[0, :, 0].clone()
    heavy[:, 0] = heavy[:, 63] = 0  # drop the sink and the window
    per_page = heavy.view(2, 16, 4).sum(-1)
    # Two pages per head; a chosen page contributes all its keys that the sink/window left.
    full = torch.tensor([3.0] + [4.0] * 14 + [3.0])
    assert ((per_page == 0) | (per_page == full)).all()
    assert ((per_page > 0).sum(-1) == 2).all()


@pytest.mark.parametrize("bits", [16, 5])
def test_bf16_bounds_are_stored_in_bf16_and_still_bound_every_key(bits):
    gen = torch.Generator().manual_seed(bits)
    keys = torch.randn(2, 3, 37, 16, generator=gen).to(torch.bfloat16)
    prep = mg.get_op("quest").prepare(keys, keys, {"page_size": 4, "label_bits": bits}, {}, 0)
    lo, hi = prep["lo"], prep["hi"]
    assert lo.dtype == hi.dtype == torch.bfloat16 and lo.shape == (2, 3, 10, 16)
    pages = torch.arange(37) // 4
    k = keys.float()
    assert (lo.float()[:, :, pages] <= k).all() and (k <= hi.float()[:, :, pages]).all()
    if bits == 16:  # the exact min and max of bf16 keys are bf16 numbers: nothing rounded
        assert torch.equal(lo[:, :, 0], keys[:, :, :4].amin(2)) and torch.equal(hi[:, :, 9], keys[:, :, 36])
