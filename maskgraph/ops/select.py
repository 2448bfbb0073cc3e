"""Selectors: top-k and top-p over Scores, new keys only."""

from __future__ import annotations

import torch

from ..env import int_max, int_min
from ..lowering import MaskLowering, NotSparse, indexset
from ..lowering.chunk import (
    NEG_INF,
    BlockScores,
    SparseChunk,
    bounded_k,
    exclude_prior,
    fused_histogram,
    group_scores,
    kernel_exclusion,
    score_ranges,
    selection_listed,
    size_budget,
    token_scores,
    top_k,
)
from ..lowering.indexset import IndexSet
from ..lowering.topk import canonical_scores, keep_count, order_keys, topk_lowest  # noqa: F401  (the rule)
from ..registry import Param, Port, operator
from ..types import PortType

_SCORES = Port("scores", PortType.SCORES, doc="estimated logits; −inf = ineligible")
_PRIOR = Port("prior", PortType.MASK, optional=True, doc="keys already selected (they are not chosen again)")


def eligible_scores(env, scores: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
    """Scores (B, Hq, Q, K) with −inf on keys in ``prior`` or forbidden by the attention mask."""
    s = env.forbid(scores.float().expand(env.B, env.Hq, env.Q, env.K))
    if prior is not None:
        s = s.masked_fill(prior > 0, float("-inf"))
    return s


def _topk_budget(params, inputs, num_keys: int) -> tuple[int, int]:
    """``k`` gathered keys, at least one (a zero budget selects one, kept by none)."""
    return 0, max(1, size_budget(params["k"], num_keys))


def lower_topk(ctx: SparseChunk, name, inputs, params, prep) -> IndexSet:
    env = ctx.env
    prior: IndexSet | None = inputs.get("prior")
    scored: BlockScores = inputs["scores"]
    exclude = kernel_exclusion(ctx, prior, scored, 1)
    fused = fused_histogram(ctx, scored, prior, exclude)
    hist = None
    if fused is not None:
        s, hist = fused
    else:
        s = token_scores(ctx, scored)
        if exclude is None:
            s = exclude_prior(ctx, s, prior)
        s = group_scores(ctx, s, scored.grouped)
    k, size = bounded_k(ctx, params["k"])
    ranges = score_ranges(ctx, scored, s) if scored.block == 1 else None
    # k = 0 keeps none
    vals, idx = top_k(ctx, s, int_max(k, 1), scored.integer, size, scored.top, exclude, hist, ranges)
    valid = vals > NEG_INF if k > 0 else torch.zeros_like(vals, dtype=torch.bool)
    excludes = prior.leaves if prior is not None else frozenset()
    listed = selection_listed(prior, idx, vals, 1) if k > 0 else None
    return indexset.selection_set(name, idx, valid, env.K, excludes, listed)


@operator(
    "topk",
    family="selector",
    output=PortType.MASK,
    inputs=[_SCORES, _PRIOR],
    params=[Param("k", "size", 0.1, "how many new keys (int) or share of K (float)")],
    doc=(
        "The k highest-scoring eligible keys per (batch, head, query): exactly min(k, eligible) "
        "keys, none of them in `prior` or forbidden by the attention mask; among scores tied "
        "with the k-th largest, the lowest key positions win. Shape (B, Hq, Q, K)."
    ),
    sparse=MaskLowering(lower_topk, _topk_budget, scores_keys=True),
)
def topk(env, *, scores, prior=None, k) -> torch.Tensor:
    s = eligible_scores(env, scores, prior)
    n = int_min(env.size(k), env.K)
    vals, idx = topk_lowest(s, n)
    picked = (vals > float("-inf")).float()
    return torch.zeros_like(s).scatter_(-1, idx, picked)


@operator(
    "topp",
    family="selector",
    output=PortType.MASK,
    inputs=[_SCORES, _PRIOR],
    params=[
        Param(
            "p", "float", 0.9, "share of the residual softmax mass to cover", low=0.0, high=1.0, low_open=True
        )
    ],
    doc=(
        "The smallest set of eligible keys whose softmax mass, over the eligible (residual) keys "
        "only, reaches p: keys are taken by decreasing score until the running mass ≥ p. "
        "Shape (B, Hq, Q, K)."
    ),
    sparse=NotSparse(
        "top-p keeps a data-dependent number of keys (up to all K), so it has no static budget "
        "to gather; use mode='simulate', or top-k"
    ),
)
def topp(env, *, scores, prior=None, p) -> torch.Tensor:
    s = eligible_scores(env, scores, prior)
    sorted_s, idx = torch.sort(s, dim=-1, descending=True)
    probs = torch.softmax(sorted_s, dim=-1)
    probs = torch.nan_to_num(probs, nan=0.0)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    keep = (mass_before < p) & (sorted_s > float("-inf"))
    return torch.zeros_like(s).scatter_(-1, idx, keep.float())
