"""The sparse runner: select (index sets) then attend over the gathered keys, chunk by chunk."""

from __future__ import annotations

from typing import Any

import torch

from ..env import Env
from ..errors import NotSupportedError
from .gather import gathered_attention
from .ops import Context
from .plan import Step, budget, build_plan, run_plan

GQA_MODES = ("per_head", "shared")

#: Elements of one gathered (B, Hsel, chunk, n, D) float32 tensor aimed for when chunking.
CHUNK_ELEMENTS = 1 << 24


def sparse_chunk(
    steps: list[Step],
    output: str,
    gqa: str,
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    q_pos: torch.Tensor,
    prep: dict,
    sinks: torch.Tensor | None,
    layer_idx: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One query chunk: out (B, Hq, Qc, D) float32 and the empty-row count (0-d int64)."""
    env = Env(queries, keys, values, attention_mask, scaling, q_pos, layer_idx)
    ctx = Context(env, gqa)
    chosen = run_plan(steps, output, ctx, prep)
    heads = torch.broadcast_shapes(chosen.idx.shape[:3], chosen.valid.shape[:3])[1]
    if heads == 1:  # no selection depends on the head: one list per KV head
        heads = env.Hkv
    lead = (env.B, heads, env.Q, chosen.size)
    idx, valid = chosen.idx.expand(lead), chosen.valid.expand(lead)
    return gathered_attention(queries, keys, values, attention_mask, scaling, idx, valid, sinks)


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

        def chunk(*args):
            return sparse_chunk(self.steps, self.output, self.gqa, *args)

        self._eager_chunk = chunk
        if compiled.backend == "inductor":
            self._chunk = torch.compile(chunk, fullgraph=True, dynamic=True, backend="inductor")
        else:
            self._chunk = chunk

    def budget(self, num_keys: int) -> int:
        """Padded number of gathered keys per (row, head, query) at ``num_keys`` keys."""
        return budget(self.steps, self.output, num_keys)

    def chunk_len(self, queries: torch.Tensor, keys: torch.Tensor) -> int:
        if self.chunk_size != "auto":
            return int(self.chunk_size)
        b, hq, q, d = queries.shape
        per_query = b * hq * max(self.budget(keys.shape[2]), 1) * d
        return max(1, min(q, CHUNK_ELEMENTS // per_query))

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
                queries[:, :, start:stop],
                keys,
                values,
                am,
                scaling,
                positions[start:stop],
                prep,
                sinks,
                layer_idx,
            )
            self.compiled.empty_rows = self.compiled.empty_rows.to(empty.device) + empty
            outs.append(out.to(queries.dtype))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
