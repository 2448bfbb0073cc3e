"""What an operator declares about sparse mode, and what its scoring functions return.

Each operator declares its sparse behaviour on itself, next to its simulate function:
``@operator(..., sparse=MaskLowering(...))`` for a mask that lowers to an index set,
``sparse=EstimatorLowering(...)`` for an estimator's block scores, ``sparse=NotSparse(why)``
for an operator that cannot run sparse. A mask that depends on positions only also declares
its position rule (``MaskLowering(..., positions=...)``, :data:`PositionFn`), from which a
prompt runs as one block-sparse attention call. :mod:`maskgraph.sparse` reads the declaration
and never names an operator.

This package sits below the operators and above the core: operator modules build their
lowerings from it, and the sparse engine (:mod:`maskgraph.sparse`) runs them. The declaration
types here import nothing of maskgraph; the building blocks are its modules:
:mod:`.chunk` (the query chunk a lowering sees, block scores, budgets, top-k over scores),
:mod:`.indexset` (index sets and their union, intersection and difference), :mod:`.topk` (the
top-k rule and its Triton selection) and :mod:`.keymask` (an attention mask in the score
kernels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

#: ``with_histogram(exclude, seg, bins)`` -> (the scores, the bounded top-k's histograms
#: (B·H·Qc, K / seg, bins) int32), made in one kernel launch.
HistogramFn = Callable[[list | None, int, int], tuple[torch.Tensor, torch.Tensor]]
#: ``excluding(exclude)`` -> (scores, ranges) with the prior's runs ``exclude`` forbidden too.
ExcludingFn = Callable[[list], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class EstimatedScores:
    """Block scores an estimator made for sparse mode.

    ``scores``: (B, H, Qc, NB) float32 with NB = ceil(K / block) and H = Hq (per query head)
    or Hkv (the max over each KV group's query heads), −inf where forbidden; or a function
    making them on first use (launched only where read). ``block``: keys per score.

    Scores made by the estimator's own Triton kernel may carry more:
    ``histogram``: the same scores with the bounded top-k's histograms in one launch;
    ``ranges``: (B, H, Qc, P, 2) int32 ordered-key bounds (lo, hi) per block of the kernel
    (or a function making them); ``masked``: the kernel forbade what the attention mask
    forbids (no torch pass over the scores is needed); ``excluding``: the scores and ranges
    again with the prior's runs forbidden by the same kernel.
    """

    scores: torch.Tensor | Callable[[], torch.Tensor]
    block: int
    histogram: HistogramFn | None = None
    ranges: torch.Tensor | Callable[[], torch.Tensor] | None = None
    masked: bool = False
    excluding: ExcludingFn | None = None

    @property
    def made(self) -> torch.Tensor:
        """:attr:`scores`, made now where they were left to a function."""
        return self.scores() if callable(self.scores) else self.scores


#: ``scores(env, prep, **params)`` -> EstimatedScores, or None where it cannot run.
ScoresFn = Callable[..., EstimatedScores | None]


@dataclass(frozen=True)
class EstimatorLowering:
    """How an estimator scores keys in sparse mode, from its prepare caches.

    ``scores(env, prep, **params)``: per-query-head block scores (torch; always runs).
    ``group_scores``: the max over each KV group's query heads, made without writing
    per-query-head scores (its own kernel), used under ``gqa="shared"`` when the attention
    mask is the same for every head; None where it cannot run. ``head_scores``: ``scores``'
    values by the estimator's kernel, used under ``gqa="per_head"``; None where it cannot run.
    ``integer``: every finite score is an integer (the Triton top-k then bins them exactly);
    ``top``: with ``integer``, a function of the node's parameters giving the largest score
    (the finite scores then lie in [0, top]).
    """

    scores: ScoresFn
    group_scores: ScoresFn | None = None
    head_scores: ScoresFn | None = None
    integer: bool = False
    top: Callable[[dict[str, Any]], int] | None = None


#: ``budget(params, inputs, num_keys)`` -> (entries read in place, entries gathered) per query
#: of the node's index set at ``num_keys`` keys; ``inputs`` maps each wired mask port to its
#: node's budget (a list of them for a variadic port).
BudgetFn = Callable[[dict[str, Any], dict[str, Any], int], tuple[int, int]]


def no_budget(params: dict[str, Any], inputs: dict[str, Any], num_keys: int) -> tuple[int, int]:
    """The budget of a node that keeps no keys of its own."""
    return 0, 0


#: ``rule(t, j)`` -> bool, True where a query at position ``t`` keeps the key at position ``j``
#: (int64 tensors that broadcast; elementwise torch operations only, no data-dependent Python
#: control flow: the rule is traced into a FlexAttention ``mask_mod``).
PositionRule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: ``positions(params, inputs, num_keys)`` -> the node's :data:`PositionRule` at ``num_keys``
#: keys; ``inputs`` maps each wired mask port to its node's rule (a list for a variadic port).
PositionFn = Callable[[dict[str, Any], dict[str, Any], int], PositionRule]


@dataclass(frozen=True)
class MaskLowering:
    """How a mask operator runs in sparse mode.

    ``lower(ctx, name, inputs, params, prep)`` -> :class:`maskgraph.lowering.indexset.IndexSet`
    for one query chunk (``ctx``: :class:`maskgraph.lowering.chunk.SparseChunk`; ``inputs``: its wired
    inputs' values, IndexSets for masks and :class:`maskgraph.lowering.chunk.BlockScores` for
    scores). ``budget``: its static size (:data:`BudgetFn`), from which the runner pads lists and
    sizes query chunks. ``scores_keys``: it reads a score per key (a top-k), so that a query
    chunk holds (B, Hq, chunk, K) scores. ``positions``: where the mask depends on query and key
    positions only, its rule (:data:`PositionFn`), the same keys per query as the simulate
    function keeps; None for a mask that reads scores or the keys.
    """

    lower: Callable[..., Any]
    budget: BudgetFn = no_budget
    scores_keys: bool = False
    positions: PositionFn | None = None


@dataclass(frozen=True)
class NotSparse:
    """An operator that cannot run in sparse mode, and why (the error names the node)."""

    reason: str


#: What ``@operator(..., sparse=...)`` takes.
SparseDeclaration = MaskLowering | EstimatorLowering | NotSparse
