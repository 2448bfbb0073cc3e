"""Selectors: top-k and top-p over Scores, new keys only."""

from __future__ import annotations

import torch

from ..registry import Param, Port, operator
from ..triton_util import triton_installed
from ..types import PortType

_SCORES = Port("scores", PortType.SCORES, doc="estimated logits; −inf = ineligible")
_PRIOR = Port("prior", PortType.MASK, optional=True, doc="keys already selected (they are not chosen again)")


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
    :func:`maskgraph.sparse.topk.select_topk` (four launches, faster than the torch rule on
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
    (:func:`maskgraph.sparse.topk.select_topk_2d`); only with it. ``ranges``: bounds of the
    scores made with them, which spare the Triton selection its range pass (the same set
    either way; the torch rule has no use for them)."""
    if triton is None:
        triton = scores.is_cuda and triton_installed()
    if triton and k > 0:
        from ..sparse.topk import select_topk

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


def eligible_scores(env, scores: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
    """Scores (B, Hq, Q, K) with −inf on keys in ``prior`` or forbidden by the attention mask."""
    s = env.forbid(scores.float().expand(env.B, env.Hq, env.Q, env.K))
    if prior is not None:
        s = s.masked_fill(prior > 0, float("-inf"))
    return s


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
)
def topk(env, *, scores, prior=None, k) -> torch.Tensor:
    s = eligible_scores(env, scores, prior)
    n = torch.sym_min(env.size(k), env.K)
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
)
def topp(env, *, scores, prior=None, p) -> torch.Tensor:
    s = eligible_scores(env, scores, prior)
    sorted_s, idx = torch.sort(s, dim=-1, descending=True)
    probs = torch.softmax(sorted_s, dim=-1)
    probs = torch.nan_to_num(probs, nan=0.0)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    keep = (mass_before < p) & (sorted_s > float("-inf"))
    return torch.zeros_like(s).scatter_(-1, idx, keep.float())
