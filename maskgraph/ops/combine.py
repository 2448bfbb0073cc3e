"""Combinators over masks of inclusion probabilities."""

from __future__ import annotations

import torch

from ..registry import Port, operator
from ..types import PortType


@operator(
    "union",
    family="combinator",
    output=PortType.MASK,
    inputs=[Port("masks", PortType.MASK, variadic=True, doc="masks to join")],
    doc="clamp(Σ masks, 0, 1): OR for 0/1 masks. Broadcasts.",
)
def union(env, *, masks) -> torch.Tensor:
    out = masks[0]
    for m in masks[1:]:
        out = out + m
    return out.clamp(0.0, 1.0)


@operator(
    "intersection",
    family="combinator",
    output=PortType.MASK,
    inputs=[Port("a", PortType.MASK), Port("b", PortType.MASK)],
    doc="min(a, b): keys both masks keep (AND for 0/1 masks).",
)
def intersection(env, *, a, b) -> torch.Tensor:
    return torch.minimum(a, b)


@operator(
    "difference",
    family="combinator",
    output=PortType.MASK,
    inputs=[Port("a", PortType.MASK), Port("b", PortType.MASK)],
    doc="a where b is 0: keys of a that b does not keep.",
)
def difference(env, *, a, b) -> torch.Tensor:
    return torch.where(b > 0, torch.zeros_like(a), a)
