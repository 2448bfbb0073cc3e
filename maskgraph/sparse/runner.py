"""The sparse runner: select (index sets), then attend over the slices and gathered keys, per chunk."""

from __future__ import annotations

import functools
import math
import sys
import types
from collections.abc import Callable
from typing import Any

import torch

from ..env import Env
from ..errors import NotSupportedError
from .gather import attend_parts
from .ops import Context
from .plan import Step, budget, budget_split, build_plan, run_plan, structure

GQA_MODES = ("per_head", "shared")

#: Elements of one gathered (B, Hsel, chunk, n, D) float32 tensor aimed for when chunking.
CHUNK_ELEMENTS = 1 << 24


def sparse_chunk(
    steps: list[Step],
    output: str,
    gqa: str,
    params: tuple[dict, ...],
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    q_pos: torch.Tensor,
    q_first: int,
    prep: dict,
    sinks: torch.Tensor | None,
    layer_idx: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One query chunk: out (B, Hq, Qc, D) float32 and the empty-row count (0-d int64)."""
    env = Env(queries, keys, values, attention_mask, scaling, q_pos, layer_idx)
    chosen = run_plan(steps, output, Context(env, gqa, q_first), prep, params)
    spans = [(p.span[0], p.span[1], p.valid) for p in chosen.parts if p.span is not None]
    listed = [p for p in chosen.parts if p.span is None]
    gathered = None
    if listed:
        heads = torch.broadcast_shapes(*(p.lead for p in listed))[1]
        if heads == 1:  # no selection depends on the head: one list per KV head
            heads = env.Hkv
        lead = (env.B, heads, env.Q)
        gathered = (
            torch.cat([p.idx.expand(*lead, p.size) for p in listed], dim=-1),
            torch.cat([p.valid.expand(*lead, p.size) for p in listed], dim=-1),
        )
    return attend_parts(queries, keys, values, attention_mask, scaling, spans, gathered, sinks)


#: (graph structure, gqa) -> compiled chunk function, shared by every parameter setting.
_COMPILED: dict[tuple, Callable] = {}


def compiled_chunk(steps: list[Step], output: str, gqa: str) -> Callable:
    """``torch.compile`` of :func:`sparse_chunk` for this graph structure, made once per process.

    Each structure gets its own copy of the function's code, so that dynamo's per-code
    recompile limit counts one graph, not all of them; parameter values are arguments.
    """
    key = (structure(steps, output), gqa)
    # inductor's symbolic-shape code for these graphs recursed past Python's default limit of
    # 1000 frames on an H100 (docs/benchmarks.md, run 3); 20000 was enough there (run 7).
    if sys.getrecursionlimit() < 20000:
        sys.setrecursionlimit(20000)
    if key not in _COMPILED:
        code = sparse_chunk.__code__.replace(co_name=f"sparse_chunk_{len(_COMPILED)}")
        fn = types.FunctionType(code, sparse_chunk.__globals__, code.co_name, sparse_chunk.__defaults__)
        _COMPILED[key] = torch.compile(
            functools.partial(fn, steps, output, gqa), fullgraph=True, dynamic=True, backend="inductor"
        )
    return _COMPILED[key]


class SparseRunner:
    """``runner(queries, keys, values, attention_mask, scaling, prep, sinks, layer_idx)``.

    Runs ``compiled.graph`` touching only the selected keys; returns (B, Hq, Q, D) in the
    queries' dtype and adds empty rows to ``compiled.empty_rows``.
    """

    def __init__(self, compiled: Any, gqa: str = "per_head", chunk_size: int | str = "auto"):
        if gqa not in GQA_MODES:
            raise NotSupportedError(f"gqa must be one of {', '.join(GQA_MODES)}, got {gqa!r}")
        self.compiled = compiled
        self.gqa = gqa
        self.chunk_size = chunk_size
        self.steps = build_plan(compiled.graph)
        self.output = compiled.graph.output
        self.params = tuple(step.params for step in self.steps)
        self.scores_keys = any(step.op in ("topk", "topk_pages") for step in self.steps)
        if compiled.backend == "inductor":
            self._chunk = compiled_chunk(self.steps, self.output, gqa)
        else:
            self._chunk = functools.partial(sparse_chunk, self.steps, self.output, gqa)

    def budget(self, num_keys: int) -> int:
        """Padded number of gathered keys per (row, head, query) at ``num_keys`` keys."""
        return budget(self.steps, self.output, num_keys)

    def chunk_len(self, queries: torch.Tensor, keys: torch.Tensor) -> int:
        """Queries per chunk: the gathered (B, Hsel, chunk, n, D) keys, the (B, Hq, chunk, K)
        scores of a top-k and the (B, Hq, chunk, spans + chunk) logits stay near
        CHUNK_ELEMENTS elements each."""
        if self.chunk_size != "auto":
            return int(self.chunk_size)
        b, hq, q, d = queries.shape
        k = keys.shape[2]
        spans, listed = budget_split(self.steps, self.output, k)
        scored = k if self.scores_keys else 0
        per_query = b * hq * max(listed * d, scored, spans, 1)
        chunk = CHUNK_ELEMENTS // per_query
        # a window run grows with the chunk (w + chunk − 1 keys): bound chunk² too
        chunk = min(chunk, math.isqrt(CHUNK_ELEMENTS // (b * hq)))
        return max(1, min(q, chunk))

    def __call__(self, queries, keys, values, attention_mask, scaling, prep, sinks, layer_idx=0):
        q, k = queries.shape[2], keys.shape[2]
        step = self.chunk_len(queries, keys)
        positions = torch.arange(k - q, k, device=queries.device)
        outs = []
        for start in range(0, q, step):
            stop = min(q, start + step)
            am = attention_mask
            if am is not None and am.shape[2] != 1:
                am = am[:, :, start:stop]
            out, empty = self._chunk(
                self.params,
                queries[:, :, start:stop],
                keys,
                values,
                am,
                scaling,
                positions[start:stop],
                k - q + start,
                prep,
                sinks,
                layer_idx,
            )
            self.compiled.empty_rows = self.compiled.empty_rows.to(empty.device) + empty
            outs.append(out.to(queries.dtype))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
