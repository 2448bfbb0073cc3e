"""vAttention adaptive sampling: a sample budget from an (ε, δ) bound (Desai et al., ICLR 2026).

The keys already attended exactly (sinks, window, top-k: the ``prior``) contribute their
:class:`~maskgraph.ops.zoo.partial.Partial` ``(N_P, D_P)``. The remaining (residual) keys R are
sampled, each independently with one probability p per row, and weighted 1/p. With e_j =
exp(s_j − m) the output o = N/D has, to first order, the sampling error

    ô − o ≈ (1/D) Σ_{j∈R} (ξ_j/p − 1) · e_j (v_j − o),      ξ_j ~ Bernoulli(p),

a sum of independent zero-mean vectors with total variance (1 − p)/p · S / D², where
S = Σ_{j∈R} e_j² ‖v_j − o‖². By the central limit theorem, ‖ô − o‖ ≤ ε‖o‖ holds with
probability ≥ 1 − δ when z·sqrt((1 − p)/p · S) ≤ ε‖o‖·D with z = Φ⁻¹(1 − δ/2) (for a vector,
``P(‖X‖ > z·sqrt(E‖X‖²)) ≤ P(|N(0,1)| > z)`` holds for δ ≤ 0.2), that is

    p ≥ S / (S + c),   c = (ε · ‖o‖ · D / z)²,      budget = p · |R|.

S, o and D are unknown; a base sample (each residual key with probability r =
``base_rate_sampling``) estimates them by Horvitz–Thompson sums added to the prior's Partial:
D̂ = D_P + Σ_base e_j / r, ô = (N_P + Σ_base e_j v_j / r) / D̂, Ŝ = Σ_base e_j² ‖v_j − ô‖² / r.
Ŝ is itself a sample sum whose heavy tail a light base sample understates, so its upper
confidence bound Ŝ + z·sqrt(Σ_base (1 − r)·t_j² / r²) (t_j = e_j²‖v_j − ô‖²) stands in for S.
Then p = clamp(Ŝ / (Ŝ + ĉ), r, 1), and the final sample reuses the base sample's random numbers
(key j is kept when u_j < p), so the base sample is part of it and nothing is counted twice.
``bound: denominator`` bounds only the relative error of D (the reference's rule): S = Σ e_j²,
c = (ε·D/z)².
"""

from __future__ import annotations

import torch

from ...attention import gqa_logits, gqa_weighted_sum
from ...errors import WiringError
from ...registry import Param, Port, operator
from ...types import PortType
from .partial import Partial, rescale
from .sampling import ATTENTION_MASK, KEYS, PRIOR, QUERIES, SEED, VALUES, residual_keys, seed_prepare, uniform

_SALT_VATTENTION = 0x7A77


def z_score(delta: float, device: torch.device | None = None) -> torch.Tensor:
    """Two-sided normal quantile Φ⁻¹(1 − δ/2), a 0-d float32 tensor (traceable by torch.compile)."""
    return torch.special.ndtri(torch.tensor(1.0 - delta / 2.0, dtype=torch.float64, device=device)).float()


def in_range(env, init_offset, local_offset) -> torch.Tensor:
    """Keys init_offset ≤ j < K − local_offset (the reference's sampling range): (1, 1, 1, K) bool.

    Each offset is an int (tokens) or a float in [0, 1] (share of K, floored by ``env.size``).
    """
    lo = env.size(init_offset)
    hi = env.size(local_offset)
    j = env.k_pos
    return ((j >= lo) & (j < env.K - hi)).view(1, 1, 1, env.K)


def _base_rate(base, n_res: torch.Tensor) -> torch.Tensor | float:
    """Base sampling probability: a float share, or an int count of residual keys per row."""
    if isinstance(base, float):
        return base
    return (base / n_res.clamp_min(1.0)).clamp(max=1.0)


def sample_probability(
    e: torch.Tensor,
    base: torch.Tensor,
    rate,
    values: torch.Tensor,
    prior_num: torch.Tensor,
    prior_den: torch.Tensor,
    epsilon: float,
    delta: float,
    bound: str,
) -> torch.Tensor:
    """Per-row sampling probability from the (ε, δ) bound (module docstring).

    e (B, Hq, Q, K) f32 residual exp-scores (0 off the residual), base (B, Hq, Q, K) bool base
    sample, rate its probability (float or (B, Hq, Q, 1)), values (B, Hkv, K, D), prior_num
    (B, Hq, Q, D) and prior_den (B, Hq, Q) relative to the same max as e.
    Returns p (B, Hq, Q, 1), clamped to [rate, 1].
    """
    w = torch.where(base, e / rate, 0.0)
    den = prior_den + w.sum(dim=-1)
    z = z_score(delta, e.device)
    if bound == "denominator":
        terms = e * e
        allowed = (epsilon * den / z) ** 2
    else:
        num = prior_num + gqa_weighted_sum(w, values)
        safe = torch.where(den > 0, den, torch.ones_like(den))
        o = torch.where((den > 0).unsqueeze(-1), num / safe.unsqueeze(-1), 0.0)
        v2 = values.float().square().sum(dim=-1).unsqueeze(2)
        if v2.shape[1] != e.shape[1]:
            v2 = v2.repeat_interleave(e.shape[1] // v2.shape[1], dim=1)
        dist2 = (v2 - 2.0 * gqa_logits(o, values, 1.0) + o.square().sum(-1, keepdim=True)).clamp_min(0.0)
        terms = e * e * dist2
        allowed = (epsilon * o.norm(dim=-1) * den / z) ** 2
    terms = torch.where(base, terms, 0.0)
    spread = (terms / rate).sum(dim=-1)
    # Ŝ is itself a sample sum: add z standard errors so that a light base sample of a
    # heavy-tailed residual does not understate the spread.
    spread_var = (terms.square() * ((1.0 - rate) / (rate * rate))).sum(dim=-1)
    spread = spread + z * spread_var.sqrt()
    total = spread + allowed
    p = torch.where(total > 0, spread / torch.where(total > 0, total, torch.ones_like(total)), 0.0)
    p = p.unsqueeze(-1)
    if isinstance(rate, float):
        return p.clamp(min=rate, max=1.0)
    return torch.maximum(p, rate).clamp(max=1.0)


def needs_partial_with_prior(node, inputs: dict) -> None:
    """Graph-validation rule: a wired ``prior`` needs the Partial over it on ``partial``."""
    if "prior" in inputs and "partial" not in inputs:
        raise WiringError(
            "missing input: vattention_sample needs the prior's Partial when `prior` is wired: "
            "wire `partial` from a `partial` node over the same mask as `prior`",
            node=node.name,
            port="partial",
        )


@operator(
    "vattention_sample",
    family="sampler",
    output=PortType.MASK,
    inputs=[
        QUERIES,
        KEYS,
        VALUES,
        ATTENTION_MASK,
        PRIOR,
        Port(
            "partial",
            PortType.PARTIAL,
            optional=True,
            doc="attention over `prior` (from a `partial` node); needed when `prior` is wired",
        ),
    ],
    params=[
        Param(
            "base_rate_sampling",
            "size",
            0.05,
            "base sample: share (float) or number (int) of residual keys",
        ),
        Param(
            "epsilon",
            "float",
            0.1,
            "tolerated relative error",
            low=0.0,
            high=1.0,
            low_open=True,
            high_open=True,
        ),
        Param(
            "delta",
            "float",
            0.05,
            "tolerated probability of exceeding epsilon",
            low=0.0,
            high=1.0,
            low_open=True,
            high_open=True,
        ),
        Param("init_offset", "offset", 0, "first keys never sampled: int tokens or float share of K"),
        Param(
            "local_offset",
            "offset",
            0,
            "keys this close to the query never sampled: int tokens or float share of K",
        ),
        Param(
            "bound",
            "choice",
            "output",
            "what epsilon bounds: the output vector or the softmax denominator (reference)",
            choices=("output", "denominator"),
        ),
        SEED,
    ],
    doc=(
        "vAttention adaptive sampling of the residual keys (outside `prior`, allowed by the "
        "attention mask, inside [init_offset, K − local_offset)): a base sample estimates the "
        "spread of the residual terms; with the prior's Partial it sets one probability per row "
        "p = clamp(S / (S + (ε‖o‖D/z)²), base rate, 1), z = Φ⁻¹(1 − δ/2), so that the relative "
        "output error exceeds ε with probability ≤ δ (CLT). Mask value p (weight 1/p). "
        "Shape (B, Hq, Q, K)."
    ),
    paper="Desai et al., ICLR 2026, vAttention: Verified Sparse Attention",
    prepare=seed_prepare,
    deterministic=False,
    validate=needs_partial_with_prior,
)
def vattention_sample(
    env,
    *,
    prior=None,
    partial: Partial | None = None,
    base_rate_sampling,
    epsilon,
    delta,
    init_offset,
    local_offset,
    bound,
    seed,
    prep,
) -> torch.Tensor:
    if prior is not None and partial is None:
        raise WiringError(
            "vattention_sample needs the prior's Partial: wire `partial` from a `partial` node "
            "over the same mask as `prior`",
            port="partial",
        )
    shape = (env.B, env.Hq, env.Q, env.K)
    s = env.logits
    res = (residual_keys(env, prior) & in_range(env, init_offset, local_offset)).expand(shape)
    s_res = torch.where(res, s, float("-inf"))
    m = s_res.amax(dim=-1)
    if partial is not None:
        m = torch.maximum(m, torch.where(partial.den > 0, partial.m, float("-inf")))
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s_res - m.unsqueeze(-1))
    if partial is not None:
        prior_num, prior_den = rescale(partial, m)
    else:
        prior_num = torch.zeros(env.B, env.Hq, env.Q, env.D, device=s.device)
        prior_den = torch.zeros_like(m)
    rate = _base_rate(base_rate_sampling, res.sum(dim=-1, keepdim=True).float())
    u = uniform(env, prep["seed"], _SALT_VATTENTION)
    base = res & (u < rate)
    p = sample_probability(e, base, rate, env.values, prior_num, prior_den, epsilon, delta, bound)
    keep = res & (u < p)
    return torch.where(keep, p, 0.0)
