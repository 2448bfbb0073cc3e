"""Combinators over masks of inclusion probabilities."""

from __future__ import annotations

import torch

from ..lowering import MaskLowering, PositionRule, indexset
from ..lowering.chunk import SparseChunk
from ..lowering.indexset import IndexSet
from ..registry import Port, operator
from ..types import PortType


def _union_budget(params, inputs, num_keys: int) -> tuple[int, int]:
    """The parts' budgets, summed."""
    parts = inputs["masks"]
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def _first_budget(params, inputs, num_keys: int) -> tuple[int, int]:
    """At most the keys of ``a``."""
    return inputs["a"]


def union_rule(params, inputs, num_keys: int) -> PositionRule:
    """Keys any part keeps."""
    parts = list(inputs["masks"])

    def rule(t, j):
        kept = parts[0](t, j)
        for part in parts[1:]:
            kept = kept | part(t, j)
        return kept

    return rule


def lower_union(ctx: SparseChunk, name, inputs, params, prep) -> IndexSet:
    return indexset.union(name, list(inputs["masks"]))


@operator(
    "union",
    family="combinator",
    output=PortType.MASK,
    inputs=[Port("masks", PortType.MASK, variadic=True, doc="masks to join")],
    doc="clamp(Σ masks, 0, 1): OR for 0/1 masks. Broadcasts.",
    sparse=MaskLowering(lower_union, _union_budget, positions=union_rule),
)
def union(env, *, masks) -> torch.Tensor:
    out = masks[0]
    for m in masks[1:]:
        out = out + m
    return out.clamp(0.0, 1.0)


def intersection_rule(params, inputs, num_keys: int) -> PositionRule:
    """Keys both keep."""
    a, b = inputs["a"], inputs["b"]
    return lambda t, j: a(t, j) & b(t, j)


def lower_intersection(ctx: SparseChunk, name, inputs, params, prep) -> IndexSet:
    return indexset.intersection(name, inputs["a"], inputs["b"])


@operator(
    "intersection",
    family="combinator",
    output=PortType.MASK,
    inputs=[Port("a", PortType.MASK), Port("b", PortType.MASK)],
    doc="min(a, b): keys both masks keep (AND for 0/1 masks).",
    sparse=MaskLowering(lower_intersection, _first_budget, positions=intersection_rule),
)
def intersection(env, *, a, b) -> torch.Tensor:
    return torch.minimum(a, b)


def difference_rule(params, inputs, num_keys: int) -> PositionRule:
    """Keys of a that b does not keep."""
    a, b = inputs["a"], inputs["b"]
    return lambda t, j: a(t, j) & ~b(t, j)


def lower_difference(ctx: SparseChunk, name, inputs, params, prep) -> IndexSet:
    return indexset.difference(name, inputs["a"], inputs["b"])


@operator(
    "difference",
    family="combinator",
    output=PortType.MASK,
    inputs=[Port("a", PortType.MASK), Port("b", PortType.MASK)],
    doc="a where b is 0: keys of a that b does not keep.",
    sparse=MaskLowering(lower_difference, _first_budget, positions=difference_rule),
)
def difference(env, *, a, b) -> torch.Tensor:
    return torch.where(b > 0, torch.zeros_like(a), a)
