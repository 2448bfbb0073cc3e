"""Fixed patterns: full, sink, local window, causal. Purely positional; they broadcast.

Query i of a chunk sits at absolute position ``env.q_pos[i]`` (= K − Q + i for the whole call).
"""

from __future__ import annotations

import torch

from ..registry import Param, Port, operator
from ..types import PortType

_KEYS = Port("keys", PortType.KEYS, doc="the key cache (only its length is read)")
_QUERIES = Port("queries", PortType.QUERIES, doc="the queries (only their positions are read)")


@operator(
    "full",
    family="fixed",
    output=PortType.MASK,
    inputs=[_KEYS],
    doc="Every key (dense attention). Shape (1, 1, 1, K).",
)
def full(env) -> torch.Tensor:
    return torch.ones(1, 1, 1, env.K, device=env.keys.device)


@operator(
    "sink",
    family="fixed",
    output=PortType.MASK,
    inputs=[_KEYS],
    params=[Param("size", "size", 128, "how many first keys (int) or share of K (float)")],
    doc="The first `size` keys: attention sinks (StreamingLLM). Shape (1, 1, 1, K).",
    paper="Xiao et al. 2023, Efficient Streaming Language Models with Attention Sinks",
)
def sink(env, *, size) -> torch.Tensor:
    n = env.size(size)
    return (env.k_pos < n).float().view(1, 1, 1, -1)


@operator(
    "local",
    family="fixed",
    output=PortType.MASK,
    inputs=[_QUERIES, _KEYS],
    params=[Param("size", "size", 128, "window length (int) or share of K (float)")],
    doc=(
        "The `size` most recent keys up to and including the query's own position: key j is "
        "kept for a query at position t when t − size < j ≤ t. Shape (1, 1, Q, K)."
    ),
    paper="Xiao et al. 2023 (local window of StreamingLLM)",
)
def local(env, *, size) -> torch.Tensor:
    w = env.size(size)
    t = env.q_pos.view(-1, 1)
    j = env.k_pos.view(1, -1)
    return ((j <= t) & (j > t - w)).float().view(1, 1, env.Q, env.K)


@operator(
    "causal",
    family="fixed",
    output=PortType.MASK,
    inputs=[_QUERIES, _KEYS],
    doc="Keys at or before the query's position (j ≤ t). Shape (1, 1, Q, K).",
)
def causal(env) -> torch.Tensor:
    t = env.q_pos.view(-1, 1)
    j = env.k_pos.view(1, -1)
    return (j <= t).float().view(1, 1, env.Q, env.K)


@operator(
    "strided",
    family="fixed",
    output=PortType.MASK,
    inputs=[_QUERIES, _KEYS],
    params=[Param("stride", "int", 64, "distance between kept keys", low=1, high=2**31)],
    doc=(
        "Every `stride`-th key counting back from the query's own position: key j is kept for a "
        "query at position t when j ≤ t and (t − j) is a multiple of stride (the strided pattern "
        "of Sparse Transformers). Shape (1, 1, Q, K)."
    ),
    paper="Child et al. 2019, Generating Long Sequences with Sparse Transformers",
)
def strided(env, *, stride) -> torch.Tensor:
    t = env.q_pos.view(-1, 1)
    j = env.k_pos.view(1, -1)
    return ((j <= t) & ((t - j) % stride == 0)).float().view(1, 1, env.Q, env.K)
