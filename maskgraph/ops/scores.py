"""The exact score estimator (the oracle): true logits."""

from __future__ import annotations

import torch

from ..registry import Port, operator
from ..types import PortType


@operator(
    "exact",
    family="estimator",
    output=PortType.SCORES,
    inputs=[
        Port("queries", PortType.QUERIES),
        Port("keys", PortType.KEYS),
        Port("attention_mask", PortType.ATTENTION_MASK),
    ],
    doc=(
        "Exact logits scaling·<q, k> + attention_mask, −inf where the attention mask forbids a "
        "key (the oracle every estimator approximates). Shape (B, Hq, Q, K)."
    ),
)
def exact(env) -> torch.Tensor:
    return env.forbid(env.logits)
