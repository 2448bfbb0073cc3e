"""What operators' sparse lowerings are built from.

A lowering is ``fn(ctx, name, inputs, params, prep) -> value`` where ``ctx`` is the
:class:`SparseChunk` of one query chunk; each operator declares its own on itself
(:class:`maskgraph.lowering.MaskLowering`, :class:`maskgraph.lowering.EstimatorLowering`).
Masks become :class:`~maskgraph.lowering.indexset.IndexSet`; Scores become :class:`BlockScores`
made by the estimator's declared scoring from its prepare caches (:func:`make_estimator`).
This module names no operator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..env import Env, int_min, size_of
from . import EstimatedScores, EstimatorLowering, HistogramFn, indexset
from .indexset import IndexSet
from .topk import MAX_RUNS, bounded_layout, topk_lowest

NEG_INF = float("-inf")


@dataclass
class SparseChunk:
    """One query chunk in sparse mode: the Env, the GQA option, the first query's position."""

    env: Env
    gqa: str  # "per_head" | "shared"
    q_first: Any = 0  # absolute position of the chunk's first query: an int (symbolic when
    # compiled), or a 0-d tensor for a static key buffer
    triton_topk: bool = False  # top-k by the Triton selection of :mod:`.topk` instead of torch


@dataclass
class BlockScores:
    """Scores (b, Hq|1, Qc, NB) float32 at granularity ``block`` keys (NB = ceil(K / block));
    ``grouped``: (b, Hkv, Qc, NB) already reduced to the max over each KV group's query heads
    (made by an estimator's ``sparse_group_scores`` under ``gqa="shared"``). ``made``: the
    scores, or a function making them on first use of :attr:`scores` (an estimator that offers
    ``histogram`` leaves them to one, so that a top-k taking the histogram path launches no
    kernel for them, in eager mode too)."""

    made: torch.Tensor | Callable[[], torch.Tensor]
    block: int
    grouped: bool = False
    integer: bool = False  # every finite score is an integer (the estimator promises it)
    top: int | None = None  # with integer: every finite score lies in [0, top]
    # with_histogram(exclude, seg, bins): :attr:`maskgraph.lowering.EstimatedScores.histogram`
    # (``hist`` of select_topk_2d)
    histogram: HistogramFn | None = None
    # the kernel-made scores' bounds, (b, Hkv|Hq, Qc, P, 2) int32 ordered keys (lo, hi) per block of the
    # kernel that made them (``ranges`` of select_topk_2d: the top-k then skips its range pass)
    ranges: torch.Tensor | Callable[[], torch.Tensor] | None = None
    # made by the estimator's own Triton kernel (grouped, or per query head by its
    # ``sparse_head_scores``): nothing forbidden but by the attention mask, so the Triton
    # top-k may drop the prior's keys itself
    by_kernel: bool = False
    # the estimator's kernel forbade what the attention mask forbids (−inf, bin 0 of its
    # histograms; Quest: pages with no allowed key): no torch pass over the scores is needed
    masked: bool = False
    # excluding(exclude) -> (scores, ranges) as made, with the prior's runs ``exclude`` (per key:
    # [Qc, 1, K, runs…]) forbidden by the same kernel: for page scores, −inf on a page unless one
    # of its keys is both allowed and outside the runs (Quest, where it applied the mask)
    excluding: Callable[[list], tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def bounds(self) -> torch.Tensor | None:
        """:attr:`ranges`, made on first use where the estimator left them to a function."""
        if callable(self.ranges):
            self.ranges = self.ranges()
        return self.ranges

    def unmasked(self, env: Env) -> bool:
        """Whether an attention mask applies that the estimator's kernel did not apply."""
        return env.allowed is not None and not self.masked

    @property
    def scores(self) -> torch.Tensor:
        if callable(self.made):
            self.made = self.made()
        return self.made

    def heads(self, env: Env) -> int:
        return env.Hkv if self.grouped else env.Hq


def bounded_k(ctx: SparseChunk, size):
    """(bound, size) of a size parameter, both capped at the keys: equal ints except for a share
    of a static buffer, where ``size`` is a 0-d tensor ≤ the int ``bound`` (see
    :meth:`maskgraph.env.Env.size_bound`). Shapes take the bound; membership the size."""
    env = ctx.env
    bound, size = env.size_bound(size)
    bound = int_min(bound, env.K)
    if isinstance(size, torch.Tensor):
        return bound, torch.minimum(size, env.num_keys)
    return bound, bound


def query_pos(env: Env) -> torch.Tensor:
    """The chunk's query positions as (1, 1, Qc, 1)."""
    return env.q_pos.view(1, 1, -1, 1)


def size_budget(value, num_keys: int, cap: int | None = None) -> int:
    """Entries per query a size parameter stands for at ``num_keys`` keys
    (:func:`~maskgraph.env.size_of`), capped at ``cap`` (default ``num_keys``)."""
    return min(size_of(value, num_keys), num_keys if cap is None else cap)


# ----- estimators -------------------------------------------------------------------------------
def make_estimator(declared: EstimatorLowering):
    """Lowering of an estimator from its declaration: under ``gqa="shared"`` (with an attention
    mask the same for every head) its ``group_scores``, under ``gqa="per_head"`` its
    ``head_scores``, where it has them and they can run; else its torch ``scores`` (whose
    group max :func:`group_scores` then takes)."""

    def made_by_kernel(made: EstimatedScores, grouped: bool, bound: int | None) -> BlockScores:
        return BlockScores(
            made.scores, int(made.block), grouped, declared.integer, bound, made.histogram, made.ranges,
            True, made.masked, made.excluding,
        )  # fmt: skip

    def lower(ctx: SparseChunk, name, inputs, params, prep) -> BlockScores:
        env = ctx.env
        bound = None if declared.top is None else int(declared.top(params))
        same_mask = env.allowed is None or env.allowed.shape[1] == 1
        if declared.group_scores is not None and ctx.gqa == "shared" and same_mask:
            grouped = declared.group_scores(env, prep, **params)
            if grouped is not None:
                return made_by_kernel(grouped, True, bound)
        if declared.head_scores is not None and ctx.gqa == "per_head":
            own = declared.head_scores(env, prep, **params)
            if own is not None:
                return made_by_kernel(own, False, bound)
        made = declared.scores(env, prep, **params)
        return BlockScores(made.scores, int(made.block), integer=declared.integer, top=bound)

    return lower


# ----- selectors --------------------------------------------------------------------------------
def token_scores(ctx: SparseChunk, scores: BlockScores) -> torch.Tensor:
    """(B, Hq|Hkv, Qc, K) float32 scores per key (blocks expanded), −inf where forbidden."""
    env = ctx.env
    s = scores.scores.float()
    if scores.block != 1:
        s = s.repeat_interleave(scores.block, dim=-1)[..., : env.K]
    s = s.expand(env.B, scores.heads(env), env.Q, env.K)
    return s if scores.block == 1 and scores.masked else env.forbid(s)


def exclude_prior(ctx: SparseChunk, s: torch.Tensor, prior: IndexSet | None) -> torch.Tensor:
    """``s`` (.., K) with −inf on keys the prior keeps."""
    if prior is None:
        return s
    pos = torch.arange(ctx.env.K, device=s.device).view(1, 1, 1, -1)
    return s.masked_fill(indexset.expand_heads(prior.contains(pos), s.shape[1]), NEG_INF)


def kernel_exclusion(
    ctx: SparseChunk, prior: IndexSet | None, scores: BlockScores, block: int
) -> list | None:
    """The Triton top-k's ``exclude`` for a prior of at most MAX_RUNS known runs (sink,
    window, causal, full and their unions) over scores of ``block`` keys each, where the top-k
    is Triton's, the estimator's own kernel made the scores (grouped or per head) and applied
    the attention mask, if any, key by key (:func:`_exact_with_mask`): the selection then drops
    the prior's keys itself, which saves a pass that reads and writes every score (B·H·K·8
    bytes).
    Scores made by torch code are left to the masking, which inductor fuses into the kernel
    that makes them. None where the prior is masked in torch (:func:`exclude_prior`)."""
    env = ctx.env
    if prior is None or not ctx.triton_topk or not scores.by_kernel or not _exact_with_mask(env, scores):
        return None
    runs = prior.intervals
    if runs is None or len(runs) > MAX_RUNS:
        return None
    return [env.Q, block, env.K, *(v for run in runs for v in run)]


def _exact_with_mask(env: Env, scores: BlockScores) -> bool:
    """Whether the top-k may drop the prior apart from the attention mask: no mask, or one the
    kernel applied to scores of single keys. A page is eligible only if one of its keys is
    both allowed and outside the prior; a page whose allowed keys all lie in the prior would
    pass a page-wise mask and a page-wise drop alike. Quest's pages under a mask are therefore
    left to its kernel with the prior's runs (:func:`prior_in_scores`) or, for a prior not
    made of runs, to a key-by-key torch pass (:func:`page_eligible`)."""
    return env.allowed is None or (scores.masked and scores.block == 1)


def prior_in_scores(
    ctx: SparseChunk, prior: IndexSet | None, scores: BlockScores
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scores, ranges) made by the estimator's kernel with the prior's runs forbidden as well
    as the attention mask — for pages, −inf unless one key is both allowed and outside the
    runs, the exact rule :func:`_exact_with_mask` leaves to a torch pass otherwise — where
    the kernel applied a mask and offers ``excluding``, and the prior is at most MAX_RUNS
    runs. None otherwise (without a mask the top-k drops the prior page by page)."""
    env = ctx.env
    if scores.excluding is None or env.allowed is None or not scores.masked or prior is None:
        return None
    runs = prior.intervals
    if runs is None or len(runs) > MAX_RUNS:
        return None
    return scores.excluding([env.Q, 1, env.K, *(v for run in runs for v in run)])


def group_scores(ctx: SparseChunk, s: torch.Tensor, grouped: bool = False) -> torch.Tensor:
    """(B, Hq, Qc, N) -> (B, Hsel, Qc, N): the max over each KV group's query heads when shared
    (``grouped``: already done by the estimator)."""
    env = ctx.env
    if ctx.gqa != "shared" or grouped:
        return s
    return s.view(env.B, env.Hkv, env.G, env.Q, s.shape[-1]).amax(dim=2)


def top_k(
    ctx: SparseChunk,
    s: torch.Tensor,
    k,
    integer: bool = False,
    size=None,
    top: int | None = None,
    exclude: list | None = None,
    hist: torch.Tensor | None = None,
    ranges: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the k largest along the last dimension, ties toward the lowest
    index (the rule of simulate mode), in no promised order. ``integer``: every finite score is
    an integer. ``size``: where a 0-d tensor ≤ k (a share of a static buffer's tokens), only
    the first ``size`` by that rule keep their values, the others read −inf. ``top``: with
    ``integer``, the finite scores lie in [0, top]. ``exclude``: from :func:`kernel_exclusion`;
    ``hist``: from :func:`fused_histogram`; ``ranges``: from :func:`score_ranges`."""
    count = size if isinstance(size, torch.Tensor) else None
    return topk_lowest(
        s, k, triton=ctx.triton_topk, integer=integer, count=count, top=top, exclude=exclude,
        hist=hist, ranges=ranges,
    )  # fmt: skip


def score_ranges(
    ctx: SparseChunk, scores: BlockScores, s: torch.Tensor, ranges: torch.Tensor | None = None
) -> torch.Tensor | None:
    """The estimator kernel's bounds of ``s`` (its scores, some set to −inf since: the
    bounds still hold every finite one) for the Triton top-k, where it made them and ``s``
    has their layout; None otherwise. ``ranges``: those of another launch of the kernel
    (``excluding``) instead of the scores' own."""
    if not ctx.triton_topk or not scores.by_kernel:
        return None
    ranges = scores.bounds if ranges is None else ranges
    if ranges is None or tuple(s.shape) != tuple(ranges.shape[:3]) + (s.shape[-1],):
        return None
    return ranges


def fused_histogram(
    ctx: SparseChunk, scores: BlockScores, prior: IndexSet | None, exclude: list | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scores, histograms) from the estimator's ``with_histogram`` where the Triton top-k takes
    its bounded path over per-key grouped scores and any attention mask is the kernel's to apply
    (the histograms drop the prior's keys by ``exclude``): the top-k then skips its histogram
    launch. None otherwise."""
    env = ctx.env
    if scores.histogram is None or scores.block != 1 or not scores.integer:
        return None
    if not ctx.triton_topk or scores.unmasked(env):
        return None
    if prior is not None and exclude is None:
        return None
    # the segments depend on K (a guard under torch.compile: a growing cache recompiles when
    # K crosses SMALL_MAX or a segment doubling, a handful of times up to 1M keys)
    layout = bounded_layout(env.K, scores.top)
    if layout is None:
        return None
    return scores.histogram(exclude, *layout)


def selection_listed(
    prior: IndexSet | None, idx: torch.Tensor, vals: torch.Tensor, page: int
) -> indexset.Listed | None:
    """The top-k's (idx, vals) as a :class:`~maskgraph.lowering.indexset.Listed`, or None where
    its prior is not made of runs (the kernel could not drop the prior's keys)."""
    if prior is None:
        return indexset.Listed(idx, vals, page)
    if prior.intervals is None:
        return None
    return indexset.Listed(idx, vals, page, frozenset(p.source for p in prior.parts))


def page_eligible(
    ctx: SparseChunk, prior: IndexSet | None, page_size: int, pages, masked: bool = False
) -> torch.Tensor | None:
    """Bool (b, h, Qc, P): pages holding a key not in ``prior`` and allowed (None = all;
    ``masked``: the scores' kernel already forbade the pages the mask forbids)."""
    env = ctx.env
    allowed = None if masked else env.allowed
    if prior is None and allowed is None:
        return None
    if torch.compiler.is_compiling() and (prior is None or prior.cheap):
        return page_eligible_by_offsets(ctx, prior, page_size, pages, allowed)
    ok = None
    if prior is not None:
        ok = ~prior.contains(torch.arange(env.K, device=env.keys.device).view(1, 1, 1, -1))
    if allowed is not None:
        ok = allowed if ok is None else ok & allowed
    ok = F.pad(ok, (0, pages * page_size - env.K), value=False)
    return ok.view(*ok.shape[:-1], pages, page_size).any(-1)


def page_eligible_by_offsets(
    ctx: SparseChunk, prior: IndexSet | None, page_size: int, pages, allowed: torch.Tensor | None
) -> torch.Tensor:
    """:func:`page_eligible` as an OR over the ``page_size`` offsets of a page, each a tensor of
    the pages' shape: under inductor a pointwise kernel instead of a slower reduction (not fused
    into the masking, whose shape is B·Hkv times larger). Used when compiling with a prior of runs (``cheap``:
    membership by arithmetic, no gather). ``allowed``: the mask's keys to keep, or None."""
    env = ctx.env
    first = torch.arange(pages, device=env.keys.device) * page_size
    if allowed is not None:  # (…, P, page_size): offset r of every page is a strided view
        allowed = F.pad(allowed, (0, pages * page_size - env.K), value=False)
        allowed = allowed.view(*allowed.shape[:-1], pages, page_size)
    ok = None
    for r in range(page_size):
        j = (first + r).view(1, 1, 1, -1)
        e = j < env.K
        if prior is not None:
            e = e & ~prior.contains(j.clamp_max(env.K - 1))
        if allowed is not None:
            e = e & allowed[..., r]
        ok = e if ok is None else ok | e
    return ok


def page_scores(ctx: SparseChunk, scores: BlockScores, prior: IndexSet | None, page_size: int, pages):
    """(B, Hq|Hkv, Qc, P) float32: each page's max score over its eligible keys, −inf if none."""
    env = ctx.env
    heads = scores.heads(env)
    if scores.block == page_size:
        s = scores.scores.float()
        # the kernel's mask serves alone only without a prior (see _exact_with_mask)
        ok = page_eligible(ctx, prior, page_size, pages, prior is None and not scores.unmasked(env))
        if ok is not None:
            s = s.masked_fill(~indexset.expand_heads(ok, heads), NEG_INF)
        return s.expand(env.B, heads, env.Q, pages)
    s = exclude_prior(ctx, token_scores(ctx, scores), prior)
    s = F.pad(s, (0, pages * page_size - env.K), value=NEG_INF)
    return s.view(env.B, heads, env.Q, pages, page_size).amax(-1)
