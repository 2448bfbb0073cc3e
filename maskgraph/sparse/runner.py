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
from ..kernels import jit_all
from ..lowering.chunk import SparseChunk
from ..static_keys import counting, raise_recompile_limit
from ..triton_util import triton_installed
from . import fused
from .flex import FlexPrefill, PrefillChoice, choose_prefill
from .gather import attend_parts
from .plan import Step, budget, budget_split, build_plan, run_plan, structure

GQA_MODES = ("per_head", "shared")
KERNELS = ("auto", "triton", "torch")
TOPKS = ("auto", "torch", "triton")

#: Largest query chunk the fused kernel takes with kernel="auto" (decode and short chunks;
#: longer chunks read their sink and window runs as slices with matrix products instead).
FUSED_MAX_QUERIES = 16

#: Compiled variants kept per graph structure (dynamo's default is 8).
RECOMPILE_LIMIT = 32

#: Elements of one gathered (B, Hsel, chunk, n, D) float32 tensor aimed for when chunking.
CHUNK_ELEMENTS = 1 << 24


def chosen_parts(
    steps: list[Step],
    output: str,
    gqa: str,
    params: tuple[dict, ...],
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    q_first: int,
    prep: dict,
    layer_idx: int = 0,
    triton_topk: bool = False,
    limit: torch.Tensor | None = None,
) -> tuple[list, Env]:
    """Run the plan for one query chunk: the output IndexSet's parts, and the chunk's Env.
    The chunk's queries sit at positions q_first, q_first + 1, …; ``limit``: a static buffer's
    token count (a 0-d tensor; no entry at or past it is valid, whatever the mask says), and
    then ``q_first`` ≤ 0 counts back from it (the first query sits at limit + q_first).
    ``triton_topk``: top-k by the Triton selection of :mod:`maskgraph.lowering.topk`. Positions are built here,
    inside the compiled function, so that they cost no launch of their own."""
    if limit is not None:
        q_first = limit + q_first
    q_pos = q_first + torch.arange(queries.shape[2], device=queries.device)
    env = Env(queries, keys, values, attention_mask, scaling, q_pos, layer_idx, limit)
    chosen = run_plan(steps, output, SparseChunk(env, gqa, q_first, triton_topk), prep, params)
    parts = chosen.parts
    if limit is not None:  # a run (the sink, a full or causal span) may reach into the padding
        parts = [p.with_valid(p.valid & (p.idx < limit)) for p in parts]
    return parts, env


def select_parts(*args, **kwargs) -> tuple[list[tuple], tuple[torch.Tensor, torch.Tensor] | None]:
    """:func:`chosen_parts` as (spans, gathered), the way :func:`attend_parts` takes them."""
    return spans_and_gathered(*chosen_parts(*args, **kwargs))


def spans_and_gathered(parts: list, env: Env) -> tuple[list[tuple], tuple[torch.Tensor, torch.Tensor] | None]:
    """Parts as (spans, gathered): (start, length, valid) runs and the other parts' (idx, valid)
    concatenated, (B, Hsel, Qc, n) each."""
    spans = [(p.span[0], p.span[1], p.valid) for p in parts if p.span is not None]
    listed = [p for p in parts if p.span is None]
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
    return spans, gathered


def sparse_chunk(
    *args, sinks: torch.Tensor | None = None, layer_idx: int = 0, limit: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One query chunk in torch: out (B, Hq, Qc, D) float32 and the empty-row count (0-d int64).
    ``args`` as :func:`select_parts` up to ``prep``; ``sinks`` (Hq,) or None."""
    spans, gathered = select_parts(*args, layer_idx=layer_idx, limit=limit)
    queries, keys, values, attention_mask, scaling = args[4:9]
    return attend_parts(queries, keys, values, attention_mask, scaling, spans, gathered, sinks, limit)


def sparse_lists(
    *args, layer_idx: int = 0, triton_topk: bool = False, limit: torch.Tensor | None = None
) -> tuple:
    """One query chunk's selection as the fused kernel reads it: the fields of a
    :class:`~maskgraph.sparse.fused.Selection` (a tuple: compiled functions return plain
    values). Runs and the top-k's output where the parts allow, else int32 index lists
    (B, Hsel, Qc, N), −1 = not attended. ``args`` as :func:`chosen_parts` up to ``prep``."""
    kwargs = dict(layer_idx=layer_idx, triton_topk=triton_topk, limit=limit)
    queries, keys = args[4], args[5]
    b, hq, qc, _ = queries.shape
    parts, env = chosen_parts(*args, **kwargs)
    if limit is None:
        sel = fused.kernel_selection(parts, env.Hkv, env.Hq)
        if sel is not None:
            return sel.fields()
    spans, gathered = spans_and_gathered(parts, env)
    lists = fused.index_lists(spans, gathered, b, keys.shape[1], hq, qc)
    return (), lists, None, 1, lists.shape[1]


#: (function, graph structure, gqa) -> compiled function, shared by every parameter setting.
_COMPILED: dict[tuple, Callable] = {}


def compiled_chunk(steps: list[Step], output: str, gqa: str, fn: Callable | None = None) -> Callable:
    """``torch.compile`` of ``fn`` (:func:`sparse_chunk` or :func:`sparse_lists`) for this graph
    structure, made once per process.

    Each structure gets its own entry function (a fresh code object binding the plan), so that
    dynamo's per-code recompile limit counts one graph, not all of them (wrapping a
    ``functools.partial`` would give every graph the same entry code); parameter values are
    arguments. Up to ``RECOMPILE_LIMIT`` variants are kept per graph (batch 1 or more, sizes
    below 2 or not, ...).
    """
    fn = fn or sparse_chunk
    key = (fn.__name__, structure(steps, output), gqa)
    # inductor's symbolic-shape code for these graphs recursed past Python's default limit of
    # 1000 frames on a GPU; 20000 is enough.
    if sys.getrecursionlimit() < 20000:
        sys.setrecursionlimit(20000)
    raise_recompile_limit(RECOMPILE_LIMIT)
    if key not in _COMPILED:
        scope = dict(_bound.__globals__, _FN=fn, _STEPS=steps, _OUTPUT=output, _GQA=gqa)
        code = _bound.__code__.replace(co_name=f"{fn.__name__}_{len(_COMPILED)}")
        entry = types.FunctionType(code, scope, code.co_name)
        _COMPILED[key] = torch.compile(entry, fullgraph=True, dynamic=True, backend="inductor")
    return _COMPILED[key]


def _bound(*args, **kwargs):
    """Template of a compiled entry: ``_FN(_STEPS, _OUTPUT, _GQA, *args)`` with those names
    bound in a per-graph globals dict by :func:`compiled_chunk`."""
    return _FN(_STEPS, _OUTPUT, _GQA, *args, **kwargs)  # noqa: F821


class SparseRunner:
    """``runner(queries, keys, values, attention_mask, scaling, prep, sinks, layer_idx)``.

    Runs ``compiled.graph`` touching only the selected keys; returns (B, Hq, Q, D) in the
    queries' dtype and adds empty rows to ``compiled.empty_rows``. ``prefill``
    (:class:`~maskgraph.sparse.flex.PrefillChoice`): how a call of more than one query on a
    dynamic cache runs, chosen here from the graph and the options (``prefill``, see
    :func:`~maskgraph.sparse.flex.choose_prefill`): one FlexAttention call where every node
    selects by position (:meth:`prefill_flex`), chunks of queries otherwise.
    """

    def __init__(
        self,
        compiled: Any,
        gqa: str = "per_head",
        chunk_size: int | str = "auto",
        kernel: str = "auto",
        topk: str = "auto",
        prefill: str = "auto",
    ):
        if gqa not in GQA_MODES:
            raise NotSupportedError(f"gqa must be one of {', '.join(GQA_MODES)}, got {gqa!r}")
        if kernel not in KERNELS:
            raise NotSupportedError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        if kernel == "triton" and not triton_installed():
            raise NotSupportedError("kernel='triton' needs the triton package (pip install triton)")
        if topk not in TOPKS:
            raise NotSupportedError(f"topk must be one of {', '.join(TOPKS)}, got {topk!r}")
        if topk == "triton" and not triton_installed():
            raise NotSupportedError("topk='triton' needs the triton package (pip install triton)")
        self.compiled = compiled
        self.gqa = gqa
        self.kernel = kernel
        self.topk = topk
        self.chunk_size = chunk_size
        self.steps = build_plan(compiled.graph)
        self.output = compiled.graph.output
        self.params = tuple(step.params for step in self.steps)
        self.scores_keys = any(step.scores_keys for step in self.steps)
        self.prefill: PrefillChoice = choose_prefill(self.steps, kernel, prefill, compiled.backend)
        self.forced_flex = prefill == "flex"
        self.flex = None
        if self.prefill.path == "flex":
            inductor = compiled.backend == "inductor"
            self.flex = FlexPrefill(self.steps, self.output, compile=inductor, chunk_size=chunk_size)
        jit_all()  # kernels found by a lookup when torch.compile traces a call (no import)
        if compiled.backend == "inductor":
            self._chunk = compiled_chunk(self.steps, self.output, gqa)
            self._lists = compiled_chunk(self.steps, self.output, gqa, sparse_lists)
        else:
            self._chunk = functools.partial(sparse_chunk, self.steps, self.output, gqa)
            self._lists = functools.partial(sparse_lists, self.steps, self.output, gqa)

    def takes_flex(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, static: Any = None
    ) -> bool:
        """Whether a call of ``queries`` (B, Hq, Q, D) takes the FlexAttention prefill: the graph
        selects by position, Q > 1, a dynamic cache (``static`` None), a device where FlexAttention
        compiles (or ``prefill="flex"``), a call not traced by
        ``torch.compile`` (the prefill keeps its block masks between calls, on the host), and no
        gradient asked for on the CPU (FlexAttention has no CPU backward). Other calls run
        chunked."""
        if self.flex is None or queries.shape[2] < 2 or static is not None:
            return False
        if torch.compiler.is_compiling():
            return False
        if not (self.forced_flex or self.flex.compiles(queries.device)):
            return False
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (queries, keys, values))
        return not (queries.device.type == "cpu" and grad)

    def prefill_flex(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float,
        sinks: torch.Tensor | None,
        causal: bool = False,
    ) -> torch.Tensor:
        """FlexAttention over the graph's position rule (see :class:`FlexPrefill`): (B, Hq, Q, D)
        in the queries' dtype; empty rows are added to ``compiled.empty_rows``."""
        if self.flex is None:
            raise NotSupportedError(f"graph '{self.compiled.graph.name}': {self.prefill}")
        made = self.flex(queries, keys, values, attention_mask, scaling, sinks, causal)
        if counting():
            self.compiled.empty_rows = self.compiled.empty_rows.to(made.empty.device) + made.empty
        return made.out.to(queries.dtype)

    def uses_kernel(self, queries: torch.Tensor) -> bool:
        """Whether chunks of ``queries`` go through the fused Triton kernel."""
        if self.kernel == "auto":
            return fused.available(queries.device) and queries.shape[2] <= FUSED_MAX_QUERIES
        return self.kernel == "triton"

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

    def _device_counter(self, device: torch.device) -> torch.Tensor:
        """``compiled.empty_rows`` as a 0-d int64 tensor on ``device`` that the fused kernel
        adds to in place (moved there once; a CUDA graph replay then keeps counting); a fresh one
        while torch.compile traces the call (see :func:`~maskgraph.static_keys.counting`)."""
        if not counting():
            return torch.zeros((), dtype=torch.int64, device=device)
        counter = self.compiled.empty_rows
        if counter.device != device or counter.dtype != torch.int64:
            counter = counter.to(device=device, dtype=torch.int64)
            self.compiled.empty_rows = counter
        return counter

    def __call__(self, queries, keys, values, attention_mask, scaling, prep, sinks, layer_idx=0, static=None):
        """``static``: a :class:`~maskgraph.static_keys.StaticKeys` when the keys are a static buffer
        (query positions are then tensors: nothing is read on the host)."""
        q, k = queries.shape[2], keys.shape[2]
        use_kernel = self.uses_kernel(queries)
        step = q if use_kernel else self.chunk_len(queries, keys)
        outs = []
        for start in range(0, q, step):
            stop = min(q, start + step)
            am = attention_mask
            if am is not None and am.shape[2] != 1:
                am = am[:, :, start:stop]
            args = (self.params, queries[:, :, start:stop], keys, values, am, scaling)
            # a static buffer's positions count back from its token count (see select_parts)
            first = k - q + start if static is None else start - q
            where = (first, prep)
            limit = None if static is None else static.num_keys
            if use_kernel:
                sel = fused.Selection.from_fields(
                    self._lists(
                        *args, *where, layer_idx=layer_idx, triton_topk=self.topk != "torch", limit=limit
                    )
                )
                # the kernel counts empty rows into the compiled attention's counter in place
                counter = self._device_counter(queries.device)
                out, _ = fused.fused_gather_attention(*args[1:], sel, sinks, queries.dtype, counter)
            else:
                out, empty = self._chunk(*args, *where, sinks=sinks, layer_idx=layer_idx, limit=limit)
                if counting():
                    self.compiled.empty_rows = self.compiled.empty_rows.to(empty.device) + empty
            outs.append(out.to(queries.dtype))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
