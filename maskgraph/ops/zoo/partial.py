"""The Partial value: attention numerator, denominator and running max over a mask.

A sampler that sizes its budget from what is already attended (vAttention) reads the prior's
:class:`Partial` through a typed ``Partial`` port, wired from a ``partial`` node.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ...attention import masked_partial
from ...registry import Port, operator
from ...types import PortType


class Partial(NamedTuple):
    """Attention over a mask, before normalisation (docs/concepts.md, "Masks are probabilities").

    - ``num`` (B, Hq, Q, D) float32: Σ_{p>0} exp(s − m)/p · v
    - ``den`` (B, Hq, Q) float32: Σ_{p>0} exp(s − m)/p
    - ``m`` (B, Hq, Q) float32: max logit over the kept keys (0 where a row keeps none, and
      then num = den = 0)
    """

    num: torch.Tensor
    den: torch.Tensor
    m: torch.Tensor


def rescale(part: Partial, m_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """num (B, Hq, Q, D) and den (B, Hq, Q) of ``part`` relative to the max ``m_new`` (B, Hq, Q).

    Rows whose den is 0 stay 0 whatever their stored max.
    """
    scale = torch.where(part.den > 0, torch.exp(part.m - m_new), torch.zeros_like(part.den))
    return part.num * scale.unsqueeze(-1), part.den * scale


@operator(
    "partial",
    family="utility",
    output=PortType.PARTIAL,
    inputs=[Port("mask", PortType.MASK, doc="the mask to attend over (e.g. a sampler's prior)")],
    doc=(
        "Numerator (B, Hq, Q, D), denominator (B, Hq, Q) and running max (B, Hq, Q) of attention "
        "over `mask` (inclusion probabilities, weights 1/p), with exact logits."
    ),
)
def partial(env, *, mask) -> Partial:
    num, den, m = masked_partial(env.logits, mask, env.values)
    return Partial(num, den, m)
