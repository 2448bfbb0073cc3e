"""Fixed patterns: full, sink, local window, causal. Purely positional; they broadcast.

Query i of a chunk sits at absolute position ``env.q_pos[i]`` (= K − Q + i for the whole call).
"""

from __future__ import annotations

import torch

from ..env import size_of
from ..lowering import MaskLowering, PositionRule, indexset
from ..lowering.chunk import SparseChunk, bounded_k, query_pos, size_budget
from ..lowering.indexset import IndexSet, Part
from ..registry import Param, Port, operator
from ..types import PortType

_KEYS = Port("keys", PortType.KEYS, doc="the key cache (only its length is read)")
_QUERIES = Port("queries", PortType.QUERIES, doc="the queries (only their positions are read)")


def _span_budget(params, inputs, num_keys: int) -> tuple[int, int]:
    """A sink's or window's keys are read in place: ``size`` of them."""
    return size_budget(params["size"], num_keys), 0


def _all_keys_budget(params, inputs, num_keys: int) -> tuple[int, int]:
    """Every key, read in place."""
    return num_keys, 0


def full_rule(params, inputs, num_keys: int) -> PositionRule:
    """Every key."""
    return lambda t, j: j >= 0


def lower_full(ctx: SparseChunk, name, inputs, params, prep) -> IndexSet:
    env = ctx.env

    def member(j):
        return torch.ones_like(j, dtype=torch.bool)

    return indexset.span_set(name, 0, env.K, member, env.K, env.keys.device, (0, env.K, 0))


@operator(
    "full",
    family="fixed",
    output=PortType.MASK,
    inputs=[_KEYS],
    doc="Every key (dense attention). Shape (1, 1, 1, K).",
    sparse=MaskLowering(lower_full, _all_keys_budget, positions=full_rule),
)
def full(env) -> torch.Tensor:
    return torch.ones(1, 1, 1, env.K, device=env.keys.device)


def sink_rule(params, inputs, num_keys: int) -> PositionRule:
    """Keys j < size."""
    n = size_of(params["size"], num_keys)
    return lambda t, j: j < n


def lower_sink(ctx: SparseChunk, name, inputs, params, prep) -> IndexSet:
    env = ctx.env
    bound, n = bounded_k(ctx, params["size"])
    run = None if isinstance(n, torch.Tensor) else (0, n, 0)
    return indexset.span_set(name, 0, bound, lambda j: j < n, env.K, env.keys.device, run)


@operator(
    "sink",
    family="fixed",
    output=PortType.MASK,
    inputs=[_KEYS],
    params=[Param("size", "size", 128, "how many first keys (int) or share of K (float)")],
    doc="The first `size` keys: attention sinks (StreamingLLM). Shape (1, 1, 1, K).",
    paper="Xiao et al. 2023, Efficient Streaming Language Models with Attention Sinks",
    sparse=MaskLowering(lower_sink, _span_budget, positions=sink_rule),
)
def sink(env, *, size) -> torch.Tensor:
    n = env.size(size)
    return (env.k_pos < n).float().view(1, 1, 1, -1)


def local_rule(params, inputs, num_keys: int) -> PositionRule:
    """Keys t − size < j ≤ t."""
    w = size_of(params["size"], num_keys)
    return lambda t, j: (j <= t) & (j > t - w)


def lower_local(ctx: SparseChunk, name, inputs, params, prep) -> IndexSet:
    """Query t keeps t−w < j ≤ t; the chunk's queries together read one run of w + Qc − 1
    (of bound + Qc − 1 where w is a share of a static buffer's tokens)."""
    env = ctx.env
    bound, w = bounded_k(ctx, params["size"])
    t = query_pos(env)
    start = ctx.q_first - bound + 1
    run = None
    if not isinstance(ctx.q_first, torch.Tensor) and not isinstance(w, torch.Tensor):
        run = (ctx.q_first - w + 1, ctx.q_first + 1, 1)  # query q keeps t − w < j ≤ t, t = q_first + q
    return indexset.span_set(
        name, start, bound + env.Q - 1, lambda j: (j <= t) & (j > t - w), env.K, env.keys.device, run
    )


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
    sparse=MaskLowering(lower_local, _span_budget, positions=local_rule),
)
def local(env, *, size) -> torch.Tensor:
    w = env.size(size)
    t = env.q_pos.view(-1, 1)
    j = env.k_pos.view(1, -1)
    return ((j <= t) & (j > t - w)).float().view(1, 1, env.Q, env.K)


def causal_rule(params, inputs, num_keys: int) -> PositionRule:
    """Keys j ≤ t."""
    return lambda t, j: j <= t


def lower_causal(ctx: SparseChunk, name, inputs, params, prep) -> IndexSet:
    env = ctx.env
    t = query_pos(env)
    # query q keeps 0 ≤ j ≤ q_first + q: one (lo, hi, slope) run only for one query (the
    # slope would move lo too)
    run = None
    if not isinstance(ctx.q_first, torch.Tensor) and env.Q == 1:
        run = (0, ctx.q_first + 1, 0)
    return indexset.span_set(name, 0, env.K, lambda j: j <= t, env.K, env.keys.device, run)


@operator(
    "causal",
    family="fixed",
    output=PortType.MASK,
    inputs=[_QUERIES, _KEYS],
    doc="Keys at or before the query's position (j ≤ t). Shape (1, 1, Q, K).",
    sparse=MaskLowering(lower_causal, _all_keys_budget, positions=causal_rule),
)
def causal(env) -> torch.Tensor:
    t = env.q_pos.view(-1, 1)
    j = env.k_pos.view(1, -1)
    return (j <= t).float().view(1, 1, env.Q, env.K)


def lower_strided(ctx: SparseChunk, name, inputs, params, prep) -> IndexSet:
    """Query t keeps t, t − stride, t − 2·stride, … ≥ 0: ⌈K / stride⌉ listed positions per
    query (gathered; −stride steps below 0 are invalid), membership by arithmetic."""
    env = ctx.env
    stride = params["stride"]
    t = query_pos(env)
    steps = torch.arange((env.K + stride - 1) // stride, device=env.keys.device).view(1, 1, 1, -1)
    idx = t - stride * steps

    def member(j):
        return (j <= t) & ((t - j) % stride == 0)

    return IndexSet([Part(idx.clamp_min(0), idx >= 0)], member, True, frozenset([name]))


def strided_rule(params, inputs, num_keys: int) -> PositionRule:
    """Keys j ≤ t with t − j a multiple of stride."""
    stride = params["stride"]
    return lambda t, j: (j <= t) & ((t - j) % stride == 0)


def _strided_budget(params, inputs, num_keys: int) -> tuple[int, int]:
    """⌈K / stride⌉ gathered keys."""
    return 0, -(-num_keys // params["stride"])


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
    sparse=MaskLowering(lower_strided, _strided_budget, positions=strided_rule),
)
def strided(env, *, stride) -> torch.Tensor:
    t = env.q_pos.view(-1, 1)
    j = env.k_pos.view(1, -1)
    return ((j <= t) & ((t - j) % stride == 0)).float().view(1, 1, env.Q, env.K)
