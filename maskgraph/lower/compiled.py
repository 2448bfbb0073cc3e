"""The compiled attention function: input checks, state preparation, query chunking.

``mg.compile(graph)`` returns a :class:`CompiledAttention`. Each call:

1. checks shapes and normalises the attention mask (sliced to K, booleans made additive);
2. runs each stateful operator's ``prepare`` (key-side caches, eagerly, outside compilation;
   operators that declare ``observes=True`` also receive the call's queries);
3. runs the generated chunk function over query chunks of at most ``chunk_size`` queries, so
   memory is O(B·Hq·chunk·K), never O(B·Hq·Q·K);
4. hands operators that declare ``feedback=`` the attention probabilities of the call, summed
   over its queries and of its last query, made by the same attention (simulate mode);
5. returns the output in the queries' dtype.
"""

from __future__ import annotations

import builtins
import linecache
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ..attention import attention_probabilities, gqa_logits
from ..errors import DTypeError, NotSupportedError, ShapeError
from ..ir import Graph
from ..state import AttentionFeedback, Observation, State
from ..static_keys import StaticKeys, counting, pin_addresses, static_mask
from .codegen import generate_source

if TYPE_CHECKING:
    from ..sparse.flex import PrefillChoice

BACKENDS = ("eager", "inductor")
MODES = ("simulate", "sparse")

#: dtypes of queries, keys, values and sinks (keys and values may differ from the queries: they
#: are converted); float64 is computed in float32 like the others.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: Elements of one (B, Hq, chunk, K) float32 temporary aimed for by ``chunk_size="auto"``
#: (64 MiB on the CPU, 512 MiB on a GPU).
AUTO_CHUNK_ELEMENTS = {"cpu": 1 << 24, "cuda": 1 << 27}


#: Devices for which the inductor compile notice was printed (once per process each).
_COMPILE_NOTED: set[str] = set()


def note_cpu_compile(graph_name: str, device: torch.device) -> None:
    """Say once per process, on stderr, that a CPU call of the inductor backend is compiling:
    the first calls wait (up to minutes on a small machine) and buy nothing over eager there."""
    if device.type != "cpu" or "cpu" in _COMPILE_NOTED or torch.compiler.is_compiling():
        return
    _COMPILE_NOTED.add("cpu")
    print(
        f"[maskgraph] compiling graph {graph_name!r} with torch.compile (inductor) for the CPU: "
        'the first calls can take a minute or more; on a CPU backend="eager" is as fast',
        file=sys.stderr,
        flush=True,
    )


class CompiledAttention:
    """``attn(queries, keys, values, attention_mask=None, scaling=None, state=None, layer_idx=0)``.

    queries (B, Hq, Q, D); keys, values (B, Hkv, K, D) with Hq a multiple of Hkv;
    attention_mask additive (or bool, True = keep), broadcastable to (B, Hq, Q, ≥K);
    returns (B, Hq, Q, D) in the queries' dtype. ``attn.mask(...)`` returns the (B, Hq, Q, K)
    probability mask. ``attn.source`` is the generated Python source.
    """

    def __init__(
        self,
        graph: Graph,
        backend: str = "eager",
        mode: str = "simulate",
        chunk_size: int | str = "auto",
        dynamic: bool = True,
        torch_mode: str | None = None,
        **sparse_options: Any,
    ) -> None:
        if backend not in BACKENDS:
            raise NotSupportedError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if mode not in MODES:
            raise NotSupportedError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        if chunk_size != "auto" and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise NotSupportedError(f"chunk_size must be 'auto' or an int >= 1, got {chunk_size!r}")
        self.graph = graph
        self.backend = backend
        self.mode = mode
        self.chunk_size = chunk_size
        if sparse_options and mode != "sparse":
            raise NotSupportedError(
                f"options {', '.join(sorted(sparse_options))} only apply to mode='sparse'"
            )
        self.sparse_options = sparse_options
        self.source, globs = generate_source(graph)
        namespace: dict[str, Any] = dict(globs)
        filename = f"<maskgraph:{graph.name}:{id(self):x}>"
        linecache.cache[filename] = (len(self.source), None, self.source.splitlines(True), filename)
        code = builtins.compile(self.source, filename, "exec")
        exec(code, namespace)  # noqa: S102 - our own generated code
        self._stateful = {
            name: spec
            for name, spec in ((n, _spec(graph, n)) for n in graph.topo_order())
            if spec.prepare is not None
        }
        self._feedback = {name: spec for name, spec in self._stateful.items() if spec.feedback is not None}
        # a graph with feedback operators runs the attention that also returns the probabilities
        entry = "chunk_attention_fed" if self._feedback else "chunk_attention"
        self._eager_attention: Callable = namespace[entry]
        self._eager_mask: Callable = namespace["chunk_mask"]
        self._params = {n: graph.node_params(n) for n in graph.nodes}
        self.empty_rows = torch.zeros((), dtype=torch.int64)
        if backend == "inductor":
            self._attention = torch.compile(
                self._eager_attention,
                fullgraph=True,
                dynamic=dynamic,
                backend="inductor",
                mode=torch_mode,
            )
            self._mask = torch.compile(self._eager_mask, fullgraph=True, dynamic=dynamic, backend="inductor")
        else:
            self._attention = self._eager_attention
            self._mask = self._eager_mask
        if mode == "sparse":
            fed = next(iter(self._feedback), None)
            if fed is not None:
                raise NotSupportedError(
                    f"graph '{graph.name}', node '{fed}' (op '{self._feedback[fed].name}'): it reads "
                    "the attention probabilities of each call (feedback=), which sparse mode's "
                    "attention does not return; use mode='simulate'"
                )
            from ..sparse import make_sparse  # noqa: F401  (raises with the reason if unsupported)

            self._sparse = make_sparse(self)

    # ----- public -----------------------------------------------------------------------------
    def __call__(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        scaling: float | None = None,
        state: State | None = None,
        layer_idx: int = 0,
        sinks: torch.Tensor | None = None,
        num_keys: torch.Tensor | None = None,
        kv_offset: int | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """Attention output (B, Hq, Q, D) in the queries' dtype.

        ``causal``: no query attends a key past its own position, as if the causal mask (key j
        for a query at position t only when j ≤ t) were combined with ``attention_mask``; a
        sparse-mode prefill of a graph that selects by position (:attr:`prefill`) applies it by
        position without building it, the other paths build it.

        ``state`` (a :class:`~maskgraph.state.State`, one per request; ``mg.inject`` keeps one):
        the estimators' caches (Quest's page bounds, PQCache's codebooks and codes,
        HashAttention's bits, Double Sparsity's labels) live there per ``layer_idx`` and grow by
        the new keys only from call to call. Without it a call builds them over all K keys, and
        PQCache fits its codebooks again: a stateless call costs a prefill's estimator work.

        ``kv_offset``: with a ``state``, the count of tokens the cache has dropped before
        ``keys[:, :, 0]`` (a sliding-window cache that rolled; ``None`` = as at this layer's last
        call, 0 at first): when it changes, the layer's state is rebuilt from ``keys`` (see
        :meth:`maskgraph.state.State.align`). It does not change what the graph computes.

        ``num_keys``: the keys are a static buffer of which only the first ``num_keys`` hold
        tokens (a 0-d integer tensor on the keys' device, never read on the host; sparse mode
        only, see :mod:`maskgraph.static_keys`): the Q queries sit at positions num_keys − Q …
        num_keys − 1, and keys from num_keys on are never attended, whatever the attention mask
        says: the call computes what it would on ``keys[:, :, :num_keys]``.
        """
        if self.backend == "inductor":
            note_cpu_compile(self.graph.name, queries.device)
        static = self._static(queries, keys, num_keys)
        flex = self.mode == "sparse" and self._sparse.takes_flex(queries, keys, values, static)
        if causal and not flex:
            end = None if static is None else static.num_keys
            attention_mask = with_causal(attention_mask, queries.shape[2], keys.shape[2], queries.device, end)
        if static is not None:
            if attention_mask is not None and attention_mask.shape[-1] < keys.shape[2]:
                raise ShapeError(
                    f"attention_mask covers {attention_mask.shape[-1]} keys; with num_keys it must "
                    f"cover the whole buffer of {keys.shape[2]}"
                )
            # without a mask the sparse runner excludes the padding by the token count itself
            # (no mask built per call, none read by the attention kernel: Env.allowed)
            if attention_mask is not None:
                allowed = static_mask(static, keys.shape[2])
                if attention_mask.dtype == torch.bool:
                    attention_mask = attention_mask[..., : keys.shape[2]] & allowed
                else:
                    attention_mask = attention_mask[..., : keys.shape[2]].masked_fill(~allowed, float("-inf"))
        am, scaling = self._check(queries, keys, values, attention_mask, scaling, sinks, keep_bool=flex)
        observed = Observation(queries, am, scaling)
        prep = self._prepare(keys, values, state, layer_idx, static, kv_offset, observed)
        if flex:
            return self._sparse.prefill_flex(queries, keys, values, am, scaling, sinks, causal)
        if self.mode == "sparse":
            return self._sparse(queries, keys, values, am, scaling, prep, sinks, layer_idx, static)
        counter = self.empty_rows if counting() else torch.zeros((), dtype=torch.int64)
        if counter.device != queries.device:
            counter = counter.to(queries.device)
        outs = []
        key_mass, last = None, None
        for q_chunk, am_chunk, q_offset in self._chunks(queries, keys, am):
            if self._feedback:
                out, counter, mass, last = self._attention(
                    q_chunk, keys, values, am_chunk, scaling, q_offset, prep, sinks, counter
                )
                key_mass = mass if key_mass is None else key_mass + mass
            else:
                out, counter = self._attention(
                    q_chunk, keys, values, am_chunk, scaling, q_offset, prep, sinks, counter
                )
            outs.append(out)
        if counting():
            self.empty_rows = counter
        if self._feedback:
            self._give_feedback(AttentionFeedback(key_mass, last), state, layer_idx)
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)

    def mask(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        scaling: float | None = None,
        state: State | None = None,
        layer_idx: int = 0,
        kv_offset: int | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """The graph's output mask, (B, Hq, Q, K) float32 inclusion probabilities, of a call
        with these arguments: queries (B, Hq, Q, D), keys and values (B, Hkv, K, D),
        ``attention_mask`` broadcastable to (B, Hq, Q, ≥K); ``kv_offset`` and ``causal`` (no
        query attends a key past its position K − Q + i) as for a call."""
        if self.backend == "inductor":
            note_cpu_compile(self.graph.name, queries.device)
        if causal:
            attention_mask = with_causal(attention_mask, queries.shape[2], keys.shape[2], queries.device)
        am, scaling = self._check(queries, keys, values, attention_mask, scaling, None)
        observed = Observation(queries, am, scaling)
        prep = self._prepare(keys, values, state, layer_idx, kv_offset=kv_offset, observed=observed)
        outs = [
            self._mask(q_chunk, keys, values, am_chunk, scaling, q_offset, prep)
            for q_chunk, am_chunk, q_offset in self._chunks(queries, keys, am)
        ]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)

    @property
    def prefill(self) -> PrefillChoice | None:
        """Sparse mode: how a call of more than one query on a dynamic cache runs, fixed when the
        graph is compiled — ``path`` ``"flex"`` (one FlexAttention call with a block mask made
        from the graph's position rule) or ``"chunked"`` (chunks of queries over gathered keys),
        and ``reason``. None in simulate mode."""
        return self._sparse.prefill if self.mode == "sparse" else None

    @property
    def stateful(self) -> bool:
        """Whether the graph has nodes that keep state between calls (estimator caches)."""
        return bool(self._stateful)

    @property
    def watches(self) -> bool:
        """Whether operators of the graph watch the queries (``observes=True``) or the attention
        (``feedback=``): a prefill that runs dense must then be shown to them
        (:meth:`observe_dense`)."""
        return any(spec.observes or spec.feedback is not None for spec in self._stateful.values())

    def kept_cache(self, state: State | None, layer_idx: int, heads: int) -> list[float]:
        """The share of the cache's keys the graph still keeps at ``layer_idx``, per query head
        (``heads`` = Hq): 1.0 where no operator evicts; where operators evict
        (``kept=``), the share of keys any of them keeps, averaged over batch rows (each query
        head counts its KV head's set). Sets of different shapes (over other key counts) raise
        a ShapeError naming both nodes."""
        union, first = None, None
        for name, spec in self._stateful.items():
            if spec.kept is None or state is None:
                continue
            kept = spec.kept(state.slot(layer_idx, name))
            if kept is None:
                continue
            kept = kept.repeat_interleave(heads // kept.shape[1], dim=1) if kept.shape[1] != heads else kept
            if union is not None and union.shape != kept.shape:
                raise ShapeError(
                    f"graph '{self.graph.name}', layer {layer_idx}: node '{first}' keeps a set of shape "
                    f"{tuple(union.shape)}, node '{name}' one of shape {tuple(kept.shape)}; the kept "
                    "sets of one call must cover the same keys (B, Hq, K)"
                )
            union, first = (kept, name) if union is None else (union | kept, first)
        if union is None:
            return [1.0] * heads
        return union.float().mean(dim=(0, 2)).tolist()

    def check_reorder(self, state: State, layer_idx: int, beam_idx: torch.Tensor) -> None:
        """Raise where ``state`` at ``layer_idx`` cannot follow a reorder of the cache's batch
        rows by ``beam_idx`` (B,) (beam search): NotSupportedError for a node whose slot holds
        something and whose operator declares no ``batch_rows``; ShapeError for a declared entry
        that is not a tensor of B rows (:meth:`maskgraph.state.State.check_rows`). Moves
        nothing: call it for every layer before the cache is reordered."""
        for name, spec in self._stateful.items():
            if spec.batch_rows is None and state.peek(layer_idx, name):
                raise NotSupportedError(
                    f"graph '{self.graph.name}', node '{name}' (op '{spec.name}'), layer {layer_idx}: "
                    "beam search reorders the cache's rows between steps, and this operator's state "
                    "cannot follow them (its operator declares no batch_rows=, "
                    "docs/writing-an-operator.md); generate with num_beams=1 (greedy or sampling)"
                )
            state.check_rows(layer_idx, name, spec.batch_rows or (), beam_idx)

    def reorder_state(self, state: State, layer_idx: int, beam_idx: torch.Tensor) -> None:
        """Move the per-row state of every node at ``layer_idx`` as the cache's rows moved: row
        b takes what row ``beam_idx[b]`` (B,) held. Raises (:meth:`check_reorder`) before
        anything of this layer moves."""
        self.check_reorder(state, layer_idx, beam_idx)
        for name, spec in self._stateful.items():
            state.reorder_rows(layer_idx, name, spec.batch_rows or (), beam_idx)

    def observe_dense(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None,
        state: State,
        layer_idx: int = 0,
        sinks: torch.Tensor | None = None,
        kv_offset: int | None = None,
    ) -> None:
        """Show a call that runs dense attention elsewhere (a prefill under protocol
        ``dense_prefill``) to the operators that watch: ``prepare`` with its queries, and
        ``feedback=`` with the probabilities of dense attention over every key the mask allows
        (``attention_mask`` None: causal, query i at position K − Q + i). Computes logits once
        more, in query chunks, but no output. Shapes as for a call."""
        am, scaling = self._check(queries, keys, values, attention_mask, scaling, sinks)
        if am is None and queries.shape[2] > 1:
            am = _causal_additive(queries.shape[2], keys.shape[2], queries.device)
        self._prepare(
            keys, values, state, layer_idx, None, kv_offset, Observation(queries, am, scaling, True)
        )
        if not self._feedback:
            return
        key_mass, last = None, None
        every = torch.ones((), device=queries.device)
        for q_chunk, am_chunk, _ in self._chunks(queries, keys, am):
            probs = attention_probabilities(gqa_logits(q_chunk, keys, scaling, am_chunk), every, sinks)
            mass = probs.sum(dim=2)
            key_mass = mass if key_mass is None else key_mass + mass
            last = probs[:, :, -1]
        self._give_feedback(AttentionFeedback(key_mass, last), state, layer_idx)

    def prepare_static(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        num_keys: torch.Tensor,
        state: State,
        layer_idx: int = 0,
    ) -> None:
        """Build (or bring up to date) the graph's estimator state over a static key buffer
        without attending: what a call with these arguments would prepare. A prefill that runs
        dense attention calls it so that later decode steps, which ``torch.compile`` may trace,
        find their state built and only add the new keys to it (nothing read on the host).
        queries (B, Hq, Q, D) are the new tokens' queries (only Q is read)."""
        static = self._static(queries, keys, num_keys)
        self._prepare(keys, values, state, layer_idx, static)

    def __repr__(self) -> str:
        return f"CompiledAttention(graph={self.graph.name!r}, backend={self.backend!r}, mode={self.mode!r})"

    # ----- internals --------------------------------------------------------------------------
    def _check(self, queries, keys, values, attention_mask, scaling, sinks, keep_bool: bool = False):
        """(attention mask, scaling): the mask cut to K keys and made additive (``keep_bool``: a
        bool mask stays bool, and the same tensor where it covers K keys already)."""
        for name, t in (("queries", queries), ("keys", keys), ("values", values)):
            if not isinstance(t, torch.Tensor) or t.dim() != 4:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ShapeError(f"{name} must be a 4-D tensor (B, H, L, D), got {shape}")
        _check_dtypes(queries, keys, values, attention_mask, sinks)
        b, hq, q, d = queries.shape
        bk, hkv, k, dk = keys.shape
        if keys.shape != values.shape[:3] + (dk,) or values.shape[:3] != keys.shape[:3]:
            raise ShapeError(
                f"keys {tuple(keys.shape)} and values {tuple(values.shape)} must agree on (B, Hkv, K)"
            )
        if bk != b or dk != d:
            raise ShapeError(
                f"queries {tuple(queries.shape)} and keys {tuple(keys.shape)} must agree on B and D"
            )
        if hq == 0 or hkv == 0 or d == 0:
            raise ShapeError(
                f"queries {tuple(queries.shape)} and keys {tuple(keys.shape)} need at least one head "
                "and one channel (Hq, Hkv, D >= 1)"
            )
        if hq % hkv:
            raise ShapeError(f"query heads ({hq}) must be a multiple of key/value heads ({hkv})")
        if q > k:
            raise ShapeError(f"more queries ({q}) than keys ({k}): keys must hold the whole cache")
        if k == 0:
            raise ShapeError("keys are empty (K = 0)")
        if scaling is None:
            scaling = float(d) ** -0.5
        am = attention_mask
        if am is not None:
            if am.dim() != 4:
                raise ShapeError(f"attention_mask must be 4-D (B, H, Q, K), got {tuple(am.shape)}")
            if am.shape[-1] < k:
                raise ShapeError(f"attention_mask covers {am.shape[-1]} keys, fewer than K={k}")
            if am.shape[-1] != k:
                am = am[..., :k]
            if am.dtype == torch.bool and not keep_bool:
                am = torch.where(am, 0.0, float("-inf")).to(torch.float32)  # one kernel
            ab, ah, aq = am.shape[:3]
            if ab not in (1, b) or ah not in (1, hq) or aq not in (1, q):
                raise ShapeError(
                    f"attention_mask {tuple(am.shape)} does not broadcast to (B, Hq, Q, K)={(b, hq, q, k)}"
                )
        if sinks is not None and sinks.shape != (hq,):
            raise ShapeError(f"sinks must have shape (Hq,)=({hq},), got {tuple(sinks.shape)}")
        return am, float(scaling)

    def static_problem(self) -> str | None:
        """Why this attention cannot take static key buffers (``num_keys``), or None if it can."""
        if self.mode != "sparse":
            return "num_keys (a static key buffer) needs mode='sparse'; simulate mode takes keys[:, :, :n]"
        for name, spec in self._stateful.items():
            support = spec.static_buffers
            if support is not True:
                why = support if isinstance(support, str) else "it keeps no cache for static buffers"
                return f"node '{name}' (op '{spec.name}') cannot read a static key buffer: {why}"
        return None

    def _static(self, queries, keys, num_keys) -> StaticKeys | None:
        if num_keys is None:
            return None
        problem = self.static_problem()
        if problem is not None:
            raise NotSupportedError(f"graph '{self.graph.name}': {problem}")
        if not isinstance(num_keys, torch.Tensor) or num_keys.dim() != 0 or num_keys.is_floating_point():
            raise ShapeError(f"num_keys must be a 0-d integer tensor, got {num_keys!r}")
        if num_keys.device != keys.device:
            raise ShapeError(f"num_keys is on {num_keys.device}, the keys on {keys.device}")
        return StaticKeys(num_keys.to(torch.int64), queries.shape[2])

    def _prepare(
        self,
        keys,
        values,
        state,
        layer_idx,
        static: StaticKeys | None = None,
        kv_offset: int | None = None,
        observed: Observation | None = None,
    ) -> dict[str, dict]:
        prep: dict[str, dict] = {}
        if state is not None and state.align(layer_idx, kv_offset):
            self._refuse_rolled(layer_idx)
        extra = {} if static is None else {"static": static}
        for name, spec in self._stateful.items():
            slot = state.slot(layer_idx, name) if state is not None else {}
            more = {"observed": observed} if spec.observes and observed is not None else {}
            prep[name] = spec.prepare(keys, values, self._params[name], slot, layer_idx, **extra, **more)
            if static is not None:
                pin_addresses(slot)
        return prep

    def _refuse_rolled(self, layer_idx: int) -> None:
        """Refuse a call after ``layer_idx``'s cache rolled when an operator of the graph evicts
        (declares ``kept=``): its slot was forgotten, so the next call would keep every key."""
        for name, spec in self._stateful.items():
            if spec.kept is not None:
                raise NotSupportedError(
                    f"graph '{self.graph.name}', node '{name}' (op '{spec.name}'), layer {layer_idx}: "
                    "the cache rolled (a sliding-window layer drops its oldest keys, kv_offset moved), "
                    "so the keys this operator evicted cannot be tracked; keep sliding-window layers "
                    "dense: list them under 'layers: dense: [...]' in the graph given to mg.inject "
                    "(maskgraph run: --dense-layers)"
                )

    def _give_feedback(self, feedback: AttentionFeedback, state: State | None, layer_idx: int) -> None:
        """Hand each feedback operator the call's probabilities (without a State there is
        nothing to update: the next call starts afresh)."""
        if state is None:
            return
        for name, spec in self._feedback.items():
            spec.feedback(state.slot(layer_idx, name), feedback, self._params[name], layer_idx)

    def _chunk_len(self, queries, keys) -> int:
        if self.chunk_size != "auto":
            return self.chunk_size
        b, hq, q, _ = queries.shape
        per_query = b * hq * keys.shape[2]
        budget = AUTO_CHUNK_ELEMENTS.get(queries.device.type, AUTO_CHUNK_ELEMENTS["cpu"])
        return max(1, min(q, budget // max(per_query, 1)))

    def _chunks(self, queries, keys, am):
        q, k = queries.shape[2], keys.shape[2]
        step = self._chunk_len(queries, keys)
        if step >= q:
            yield queries, am, k - q
            return
        for start in range(0, q, step):
            stop = min(q, start + step)
            am_chunk = am
            if am is not None and am.shape[2] != 1:
                am_chunk = am[:, :, start:stop]
            yield queries[:, :, start:stop], am_chunk, k - q + start


def with_causal(
    attention_mask: torch.Tensor | None, q: int, k: int, device: torch.device, end: torch.Tensor | None = None
) -> torch.Tensor | None:
    """``attention_mask`` (bool or additive, (B|1, H|1, Q|1, ≥K)) combined with the causal mask
    of Q queries at positions end − Q … end − 1 over K keys (``end`` = K, or a static buffer's
    0-d token count): a bool (B|1, H|1, Q, K) mask, or additive with −inf past each query. A
    mask that covers fewer than K keys, or whose query dimension is neither 1 nor Q, is
    returned as it is (the call's checks refuse it with a ShapeError)."""
    first = (k if end is None else end) - q
    pos = first + torch.arange(q, device=device).view(-1, 1)
    causal = (torch.arange(k, device=device).view(1, -1) <= pos).view(1, 1, q, k)
    am = attention_mask
    if am is None:
        return causal
    if am.dim() != 4 or am.shape[-1] < k or am.shape[2] not in (1, q):
        return am
    am = am[..., :k]
    if am.dtype == torch.bool:
        return am & causal
    return am.masked_fill(~causal, float("-inf"))


def _check_dtypes(queries, keys, values, attention_mask, sinks) -> None:
    """Refuse what SDPA refuses: non-float queries, keys, values or sinks, and an attention
    mask that is neither bool (True = attend) nor float (additive)."""
    valid = ", ".join(str(t) for t in FLOAT_DTYPES)
    for name, t in (("queries", queries), ("keys", keys), ("values", values), ("sinks", sinks)):
        if t is not None and t.dtype not in FLOAT_DTYPES:
            raise DTypeError(f"{name} have dtype {t.dtype}; valid: {valid}")
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        if not attention_mask.is_floating_point():
            raise DTypeError(
                f"attention_mask has dtype {attention_mask.dtype}; valid: torch.bool (True = attend) "
                f"or a floating dtype (added to the logits: 0 = attend, -inf = not)"
            )


def _causal_additive(q: int, k: int, device: torch.device) -> torch.Tensor:
    """(1, 1, Q, K) float32: 0 where key j ≤ K − Q + i, −inf after."""
    i = k - q + torch.arange(q, device=device).view(-1, 1)
    j = torch.arange(k, device=device).view(1, -1)
    return torch.where(j <= i, 0.0, float("-inf")).view(1, 1, q, k)


def _spec(graph: Graph, name: str):
    from ..registry import get_op

    return get_op(graph.nodes[name].op, node=name)


def compile(  # noqa: A001 - mirrors torch.compile
    graph: Graph | str | dict,
    backend: str = "eager",
    mode: str = "simulate",
    chunk_size: int | str = "auto",
    overrides: dict[str, Any] | None = None,
    torch_mode: str | None = None,
    **sparse_options: Any,
) -> CompiledAttention:
    """Lower ``graph`` to one attention function.

    ``backend="eager"`` runs the generated code as Python; ``"inductor"`` compiles it with
    ``torch.compile(fullgraph=True, dynamic=True)``. ``mode="simulate"`` evaluates the mask
    over all keys (exact semantics); ``mode="sparse"`` touches only the selected keys
    (``sparse_options``, e.g. ``gqa="shared"``, are documented in :mod:`maskgraph.sparse`).
    ``torch_mode`` is passed to ``torch.compile(mode=...)`` for the inductor backend, e.g.
    ``"reduce-overhead"`` (CUDA graphs: for fixed shapes; each new K records a new graph).
    The graph is compiled whole: its ``layers`` rules are not applied (a ``layers.pyramid``
    parameter keeps its mean value); compile ``graph.for_layer(i, num_layers)`` for layer i.
    """
    from ..loader import load_graph

    if not isinstance(graph, Graph):
        graph = load_graph(graph, overrides=overrides)
    elif overrides:
        graph = graph.with_overrides(overrides)
    return CompiledAttention(
        graph,
        backend=backend,
        mode=mode,
        chunk_size=chunk_size,
        torch_mode=torch_mode,
        **sparse_options,
    )
