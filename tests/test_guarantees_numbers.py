"""Adversarial inputs that must never give silently wrong numbers (docs/guarantees.md, "Numbers").

Samplers draw per layer; estimator state follows a sliding-window cache as it rolls; NaN and
inf inputs propagate as in SDPA; integer tensors are refused; calibration files are checked
against the model they are used with. Statistical assertions state the probability that they
fail for a correct implementation.
"""

from __future__ import annotations

import math

import pytest
import torch

import maskgraph as mg


def qkv(b, hq, hkv, q, k, d, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, hq, q, d, generator=g) * scale,
        torch.randn(b, hkv, k, d, generator=g),
        torch.randn(b, hkv, k, d, generator=g),
    )


def ref_attention(queries, keys, values, keep=None, additive=None):
    """Float64 softmax attention with the G-fold key expansion done plainly.

    keep (B|1, Hq|1, Q, K) bool keys attended (all when None); additive mask likewise."""
    g = queries.shape[1] // keys.shape[1]
    k = keys.double().repeat_interleave(g, dim=1)
    v = values.double().repeat_interleave(g, dim=1)
    s = torch.einsum("bhqd,bhkd->bhqk", queries.double(), k) * queries.shape[-1] ** -0.5
    if additive is not None:
        s = s + additive.double()
    if keep is not None:
        s = s.masked_fill(~keep, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


# ----- samplers draw per layer ----------------------------------------------------------------
SAMPLERS = {
    "random_sample": {"sampling_rate": 0.5, "seed": 11},
    # a loose bound keeps the probability at the base rate, well below 1
    "vattention_sample": {"base_rate_sampling": 0.3, "epsilon": 0.9, "delta": 0.5, "seed": 11},
}


def _sampler(op: str):
    node = {"name": "s", "op": op, "params": SAMPLERS[op]}
    return mg.compile({"graph": op, "nodes": [node], "output": "s"})


def _agree_probability(p: torch.Tensor) -> float:
    """Probability that two independent draws with inclusion probabilities ``p`` agree on every
    key: Π_j (1 − 2·p_j·(1 − p_j)), in float64 logs."""
    p = p.double()
    return math.exp(float(torch.log1p(-2 * p * (1 - p)).sum()))


@pytest.mark.parametrize("op", list(SAMPLERS))
def test_samplers_draw_a_different_mask_on_each_layer(op):
    attn = _sampler(op)
    q, k, v = qkv(2, 4, 2, 3, 200, 16, scale=0.1)
    masks = [attn.mask(q, k, v, layer_idx=layer) for layer in (0, 1, 7)]
    for layer, m in zip((0, 1, 7), masks):
        # same layer, same seed: the same draw, whether or not a State is passed
        assert torch.equal(attn.mask(q, k, v, layer_idx=layer, state=mg.State()), m)
    # both samplers draw every key of a row with one probability: the row's largest value
    rate = masks[0].amax(dim=-1, keepdim=True).expand_as(masks[0]).double()
    assert 0 < float(rate.min()) and float(rate.max()) < 1
    # independent layers agree on every key with the probability computed from the mask's own
    # inclusion probabilities; it is below 1e-30 here, the chance of a false failure
    assert _agree_probability(rate) < 1e-30
    for other in masks[1:]:
        assert not torch.equal(other, masks[0])
        # keep decisions of two independent draws at rate r agree with probability
        # a = r² + (1 − r)²; the agreement count's sd is sqrt(Σ a(1 − a)): a 6-sd band fails
        # with probability < 1e-8
        same = ((other > 0) == (masks[0] > 0)).double()
        a = rate * rate + (1 - rate) * (1 - rate)
        assert abs(float(same.sum() - a.sum())) < 6 * math.sqrt(float((a * (1 - a)).sum()))
