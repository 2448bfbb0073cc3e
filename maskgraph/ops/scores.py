"""The exact score estimator (the oracle): true logits."""

from __future__ import annotations

import torch

from ..lowering import EstimatedScores, EstimatorLowering
from ..registry import Port, operator
from ..types import PortType


def exact_sparse_scores(env, prep) -> EstimatedScores:
    """The oracle's block scores in sparse mode: the true logits (it reads every key; that is
    what it is), blocks of one key."""
    return EstimatedScores(env.forbid(env.logits), 1)


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
    sparse=EstimatorLowering(exact_sparse_scores),
)
def exact(env) -> torch.Tensor:
    return env.forbid(env.logits)
