"""Uniform random sampling of the keys outside a prior mask, and the random numbers behind it.

Every sampler draws its randomness from :func:`uniform`, a counter-based generator: the uniform
number of (batch, head, query position, key) is an integer hash of those coordinates, the
layer, a per-operator salt and a seed. The layer enters through the seed tensor that
:func:`seed_prepare` derives per call from ``seed`` and the layer index (outside compiled code,
so layers share one compiled function), in simulate and sparse mode alike. So a draw is

- the same in eager mode and under ``torch.compile`` (no generator state inside the graph);
- independent of how the queries are chunked;
- different on every layer, and the same on one layer for one seed;
- reproducible from ``seed`` (``null`` = a fresh seed per call, drawn from torch's global
  generator, so ``torch.manual_seed`` still makes a run repeatable).

The hash is the 32-bit "lowbias32" integer finaliser, evaluated in int64 so that no product
overflows (a 32-bit multiply is split into 16-bit halves).
"""

from __future__ import annotations

import torch

from ...registry import Param, Port, operator
from ...types import PortType

_M32 = 0xFFFFFFFF

SEED = Param(
    "seed",
    "seed",
    None,
    "integer seed of the random draws; null = fresh randomness on every call",
)
#: Graph-input ports a sampler reads from ``env`` (auto-wired; declared so drawings show them).
QUERIES = Port("queries", PortType.QUERIES)
KEYS = Port("keys", PortType.KEYS)
VALUES = Port("values", PortType.VALUES)
ATTENTION_MASK = Port("attention_mask", PortType.ATTENTION_MASK)
PRIOR = Port(
    "prior",
    PortType.MASK,
    optional=True,
    doc="keys already attended (never sampled again); absent = none",
)


# ----- counter-based random numbers -----------------------------------------------------------
def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x · c) mod 2**32 for int64 x in [0, 2**32) without int64 overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective avalanche hash of int64 values in [0, 2**32) (same shape, same range)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def draw_seed(seed: int | None, device: torch.device, layer_idx: int = 0) -> torch.Tensor:
    """A 0-d int64 tensor in [0, 2**32): ``seed`` reduced to 32 bits (or a fresh random one)
    hashed with ``layer_idx``, so that each layer draws its own numbers from one seed."""
    if seed is None:
        base = int(torch.randint(0, 2**32, (), dtype=torch.int64))
    else:
        base = seed & _M32
    layer = mix32(torch.tensor(int(layer_idx) & _M32, dtype=torch.int64))
    return mix32(layer ^ base).to(device)


def uniform(env, seed: torch.Tensor, salt: int) -> torch.Tensor:
    """Uniform numbers in [0, 1), one per (batch, query head, query, key): (B, Hq, Qc, K) float32.

    ``seed`` is a 0-d int64 tensor that already carries the layer (see :func:`draw_seed`);
    ``salt`` separates the streams of different operators. The number of a coordinate does not
    depend on the chunking.
    """
    dev = env.keys.device
    h = mix32((seed ^ (salt & _M32)) & _M32)
    bh = torch.arange(env.B * env.Hq, device=dev, dtype=torch.int64).view(env.B, env.Hq, 1, 1)
    h = mix32(h ^ bh)
    h = mix32(h ^ env.q_pos.to(torch.int64).view(1, 1, -1, 1))
    k = mix32(torch.arange(env.K, device=dev, dtype=torch.int64).view(1, 1, 1, -1) ^ 0x9E3779B9)
    h = mix32(h ^ k)
    return (h >> 8).float() * (1.0 / (1 << 24))


def residual_keys(env, prior: torch.Tensor | None) -> torch.Tensor:
    """Keys a sampler may draw: allowed by the attention mask and not in ``prior``.

    Returns a bool tensor broadcastable to (B, Hq, Qc, K).
    """
    ok = torch.ones(1, 1, 1, env.K, dtype=torch.bool, device=env.keys.device)
    if env.allowed is not None:
        ok = ok & env.allowed
    if prior is not None:
        ok = ok & ~(prior > 0)
    return ok


def seed_prepare(keys, values, params, slot, layer_idx) -> dict:
    """Per-call preparation of a sampler: its seed tensor for ``layer_idx`` (fresh when
    ``seed`` is null)."""
    return {"seed": draw_seed(params["seed"], keys.device, layer_idx)}


# ----- the operator ---------------------------------------------------------------------------
_SALT_RANDOM = 0x5A17


@operator(
    "random_sample",
    family="sampler",
    output=PortType.MASK,
    inputs=[KEYS, ATTENTION_MASK, PRIOR],
    params=[
        Param(
            "sampling_rate",
            "float",
            0.1,
            "probability that each residual key is kept (weight 1/rate)",
            low=0.0,
            high=1.0,
            low_open=True,
        ),
        SEED,
    ],
    doc=(
        "Uniform sampling of the residual keys (outside `prior`, allowed by the attention mask): "
        "each is kept independently with probability `sampling_rate` and its mask value is that "
        "probability (weight 1/rate in the attention). Works for any K (no minimum sample). "
        "Shape (B, Hq, Q, K)."
    ),
    paper="uniform sampling baseline of sparse-attention-hub (RandomSamplingMasker)",
    prepare=seed_prepare,
    deterministic=False,
)
def random_sample(env, *, prior=None, sampling_rate, seed, prep) -> torch.Tensor:
    u = uniform(env, prep["seed"], _SALT_RANDOM)
    keep = (u < sampling_rate) & residual_keys(env, prior)
    return keep.float() * sampling_rate
