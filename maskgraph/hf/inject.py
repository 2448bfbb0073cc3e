"""Route a transformers model's attention through a graph.

``mg.inject(model, graph)`` registers, under a name unique to this injection,

- an attention function with ``transformers.AttentionInterface``: it receives each layer's
  post-RoPE queries and the post-cache-update keys/values, and calls the layer's
  :class:`~maskgraph.lower.compiled.CompiledAttention` (or dense SDPA where the layer stays dense
  or the protocol says so);
- a mask function with ``transformers.AttentionMaskInterface``: transformers builds causal,
  padding and sliding-window masks only for implementations it knows; ours materialises the
  boolean (B, 1, Q, K) mask (the SDPA mask without the "is_causal" shortcut), so the graph
  sees exactly the keys the layer may attend (Gemma3's sliding layers keep their window) —
  except for a causal prompt on an empty cache without padding, where it returns None (SDPA's
  ``is_causal``; the graph builds the causal mask itself). A decode step's mask (one query,
  causal, no padding, no window) is noted as such: a graph layer then runs without it (the
  query may attend every key its cache holds, a static layer's token count bounds them), which
  spares the estimators their masking work; dense layers and observers still get it;

then switches the model to that name. :meth:`Injection.remove` (or leaving the ``with`` block)
switches back and unregisters both, so the model computes bit for bit what it did before.

Beam search (``generate(..., num_beams=N)``) reorders the cache's batch rows between steps
through the model's ``_reorder_cache`` hook when it has one, else the cache's
``reorder_cache``. The injection sets that hook on the model (wrapping the model's own, if
any): it reorders the cache as generate would, then moves the current request's operator State
the same way (:meth:`maskgraph.state.State.reorder_rows`), or raises before anything moves
(NotSupportedError naming the node whose state cannot follow, ShapeError for per-row state
that does not hold one row per cache row).
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from collections.abc import Iterator
from typing import Any, Protocol

import torch

from ..errors import MaskgraphError, NotSupportedError
from ..ir import Graph
from ..lower import CompiledAttention
from ..lower import compile as mg_compile
from . import requests
from .requests import RequestTracker

_COUNTER = itertools.count()


class Observer(Protocol):
    """Receives every attention call that went through a graph (shapes as in docs/concepts.md, "Port types")."""

    def observe(
        self,
        layer_idx: int,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float,
        out: torch.Tensor,
        attn: CompiledAttention,
    ) -> None: ...


class Injection:
    """A graph injected into one model. ``remove()`` restores it; also a context manager.

    Attributes: ``name`` (the registered implementation name), ``graph``, ``protocol``,
    ``layers`` (layer index -> CompiledAttention, or None where the layer stays dense),
    ``state`` (the current request's State), ``calls`` (attention calls that went through a
    graph), ``dense_calls`` (those that ran dense), ``static_calls`` (graph calls that read a
    static cache's whole buffer with its token count on the device: see
    :mod:`maskgraph.static_keys`; such calls can be recorded in a CUDA graph). The counters count
    eager calls only: calls that ``torch.compile`` traced (transformers' compiled decode steps)
    are not counted, since a counter read there would recompile every step.
    """

    def __init__(
        self,
        model: Any,
        graph: Graph,
        *,
        mode: str,
        protocol: str,
        backend: str,
        observer: Observer | None,
        chunk_size: int | str,
        **sparse_options: Any,
    ) -> None:
        self.model = model
        self.graph = graph
        self.protocol = protocol
        self.observer = observer
        self.tracker = RequestTracker(protocol)
        self.layers = _compile_layers(graph, _num_layers(model), backend, mode, chunk_size, sparse_options)
        _check_fits_model(self.layers, model)
        self.name = f"maskgraph_{graph.name}_{next(_COUNTER)}"
        self.calls = 0
        self.dense_calls = 0
        self.static_calls = 0  # of ``calls``: those that read a static cache's whole buffer
        self._cache: Any = None  # the cache of the forward call in progress
        self._original = model.config._attn_implementation
        self._hooks: list[Any] = []
        self._removed = False
        self._reorder_before: Any = _NOTHING  # the model's own ``_reorder_cache`` instance attribute
        self._reorder_inner: Any = None  # what reordered the cache before the injection, if not the cache
        self._install()

    # ----- public -----------------------------------------------------------------------------
    @property
    def state(self):
        """The operator State of the current request."""
        return self.tracker.state

    def new_request(self) -> None:
        """Start a new request by hand (fresh State)."""
        self.tracker.new_request()

    @contextlib.contextmanager
    def dense(self) -> Iterator[Injection]:
        """Inside this block every attention call runs dense (e.g. to prefill a context)."""
        self.tracker.forced_dense += 1
        try:
            yield self
        finally:
            self.tracker.forced_dense -= 1

    def remove(self) -> None:
        """Restore the model's attention implementation and unregister our functions."""
        if self._removed:
            return
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        current = self.model.config._attn_implementation
        if current != self.name and current in AttentionInterface._global_mapping:
            raise MaskgraphError(
                f"{self.name} was injected under {current}, which is still active: remove that one first"
            )
        for hook in self._hooks:
            hook.remove()
        self._uninstall_reorder()
        self.model.set_attn_implementation(self._original)
        AttentionInterface._global_mapping.pop(self.name, None)
        AttentionMaskInterface._global_mapping.pop(self.name, None)
        self._removed = True

    def __enter__(self) -> Injection:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        dense = [i for i, a in self.layers.items() if a is None]
        return (
            f"Injection({self.name!r}, protocol={self.protocol!r}, dense layers={dense}, "
            f"{'removed' if self._removed else 'active'})"
        )

    # ----- internals --------------------------------------------------------------------------
    def _install(self) -> None:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(self.name, self._attention)
        AttentionMaskInterface.register(self.name, _materialised_mask)
        try:
            self.model.set_attn_implementation(self.name)
        except Exception as exc:
            AttentionInterface._global_mapping.pop(self.name, None)
            AttentionMaskInterface._global_mapping.pop(self.name, None)
            raise NotSupportedError(
                f"{type(self.model).__name__} does not accept a custom attention implementation: {exc}"
            ) from exc
        if self.model.config._attn_implementation != self.name:
            self.remove()
            raise NotSupportedError(
                f"{type(self.model).__name__} does not support switching its attention implementation"
            )
        self._hooks.append(self.model.register_forward_pre_hook(self._before, with_kwargs=True))
        self._hooks.append(self.model.register_forward_hook(self._after, with_kwargs=True))
        self._install_reorder()

    def _install_reorder(self) -> None:
        """Set ``model._reorder_cache`` (what beam search calls to reorder the cache) to
        :meth:`_reorder_cache`, keeping whatever the model had."""
        self._reorder_before = self.model.__dict__.get("_reorder_cache", _NOTHING)
        self._reorder_inner = getattr(self.model, "_reorder_cache", None)
        self.model.__dict__["_reorder_cache"] = self._reorder_cache

    def _uninstall_reorder(self) -> None:
        if self.model.__dict__.get("_reorder_cache") != self._reorder_cache:
            return
        if self._reorder_before is _NOTHING:
            del self.model.__dict__["_reorder_cache"]
        else:
            self.model.__dict__["_reorder_cache"] = self._reorder_before

    def _reorder_cache(self, cache: Any, beam_idx: torch.Tensor) -> Any:
        """Beam search's reorder of ``cache``'s batch rows (row b takes row ``beam_idx[b]``),
        followed by the current request's State when ``cache`` is that request's cache (a cache
        of another request starts a new one at its next call). Returns the cache."""
        ours = self.tracker.holds(cache)
        if ours:
            beam_idx = _checked_beam_idx(beam_idx)
            for layer, attn in self.layers.items():  # refuse before anything moves
                if attn is not None:
                    attn.check_reorder(self.tracker.state, layer, beam_idx)
        if self._reorder_inner is not None:
            cache = self._reorder_inner(cache, beam_idx)
        elif callable(getattr(cache, "reorder_cache", None)):
            cache.reorder_cache(beam_idx)
        else:
            raise NotSupportedError(
                f"{type(self.model).__name__} cannot use beam search with a {type(cache).__name__}: "
                "the cache cannot be reordered"
            )
        if ours:
            for layer, attn in self.layers.items():
                if attn is not None:
                    attn.reorder_state(self.tracker.state, layer, beam_idx)
            self.tracker.continue_with(cache)
        return cache

    def _before(self, module, args, kwargs):
        self._cache = _cache_of(kwargs)
        self.tracker.before_forward(self._cache)

    def _after(self, module, args, kwargs, output):
        self._cache = None  # no reference kept between calls (a cache may hold gigabytes)
        self.tracker.after_forward(_cache_of(output))

    def _count(self, counter: str) -> None:
        """Add one to a call counter, except while ``torch.compile`` traces the call: a Python
        value read there is guarded on, so counting would recompile every step (and, past
        dynamo's recompile limit, fall back to eager). Compiled calls are not counted."""
        if not requests.compiling():
            setattr(self, counter, getattr(self, counter) + 1)

    def _attention(
        self,
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, None]:
        """transformers' attention signature; returns ((B, Q, Hq, D), None)."""
        layer = int(getattr(module, "layer_idx", 0))
        attn = self.layers.get(layer)
        sinks = getattr(module, "sinks", None)
        if attn is None or not self.tracker.routes_through_graph():
            self._count("dense_calls")
            count = _static_count(self._cache, layer) if attn is not None else None
            if count is not None and attn.static_problem() is None and attn.stateful:
                # a dense prefill on a static cache builds the state its decode steps extend
                attn.prepare_static(query, key, value, count, self.tracker.state, layer)
            elif (
                attn is not None
                and attn.watches
                and self.tracker.in_prefill
                and not self.tracker.forced_dense
            ):
                # operators that watch the queries or the attention see the dense prefill too
                valid = _valid_length(self._cache, layer, key.shape[2], attention_mask)
                mask = None if attention_mask is None else attention_mask[..., :valid]
                attn.observe_dense(
                    query,
                    key[:, :, :valid],
                    value[:, :, :valid],
                    mask,
                    scaling,
                    self.tracker.state,
                    layer,
                    sinks,
                )
            return _dense(module, query, key, value, attention_mask, dropout, scaling, sinks, kwargs)
        if kwargs.get("softcap") is not None:
            raise NotSupportedError("attention logit soft-capping is not supported by maskgraph graphs")
        scale = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
        context = {"state": self.tracker.state, "layer_idx": layer, "sinks": sinks}
        count = _static_count(self._cache, layer)
        # an unpadded decode step's mask forbids only the keys past the query's position: those
        # past the token count in a static buffer (which the graph call drops itself), none in a
        # dynamic cache or a static one cut to its tokens; the graph runs without it (an observer
        # still gets it)
        decode_step = _is_decode_mask(attention_mask)
        if count is not None and attn.static_problem() is None:
            # the whole static buffer, its token count on the device: no host read, capturable
            if attention_mask is None and query.shape[2] > 1:
                attention_mask = _causal(query.shape[2], key.shape[2], query.device, count)
            graph_mask = None if decode_step else attention_mask
            out = attn(query, key, value, graph_mask, scale, num_keys=count, **context)
            self._count("static_calls")
        else:
            if count is not None and requests.recording():
                raise NotSupportedError(
                    f"layer {layer}: recording a CUDA graph over a static cache needs a graph that "
                    f"reads static buffers, and {attn.static_problem()}"
                )
            valid = _valid_length(self._cache, layer, key.shape[2], attention_mask)
            if valid < key.shape[2]:  # a static cache: keys past the tokens seen so far are padding
                key, value = key[:, :, :valid], value[:, :, :valid]
                if attention_mask is not None:
                    attention_mask = attention_mask[..., :valid]
            # a causal prompt without padding: the graph call applies causality itself (a
            # position-only graph's sparse prefill without building the Q × K mask)
            causal = attention_mask is None and query.shape[2] > 1
            graph_mask = None if decode_step else attention_mask
            dropped = _dropped_tokens(self._cache, layer, key.shape[2])
            out = attn(query, key, value, graph_mask, scale, kv_offset=dropped, causal=causal, **context)
            if causal and self.observer is not None:
                attention_mask = _causal(query.shape[2], key.shape[2], query.device)
        self._count("calls")
        if self.observer is not None:
            self.observer.observe(layer, query, key, value, attention_mask, scale, out, attn)
        return out.transpose(1, 2).contiguous(), None


def inject(
    model: Any,
    graph: Graph | str | dict,
    mode: str = "simulate",
    protocol: str = "dense_prefill",
    backend: str = "eager",
    observer: Observer | None = None,
    overrides: dict[str, Any] | None = None,
    chunk_size: int | str = "auto",
    **sparse_options: Any,
) -> Injection:
    """Route ``model``'s attention through ``graph``; returns an :class:`Injection`.

    ``graph``: a Graph, a shipped name, a path, YAML text or a dict (with ``overrides``).
    ``mode`` and ``backend`` go to :func:`maskgraph.compile` (one compiled function per
    distinct layer graph; ``graph.for_layer(i)`` keeps listed layers dense). ``protocol``:
    ``"dense_prefill"`` or ``"sparse"`` (see :mod:`maskgraph.hf.requests`). ``observer``: an
    object with ``observe(layer_idx, queries, keys, values, attention_mask, scaling, out, attn)``
    called after every attention call that went through the graph. ``sparse_options`` (with
    ``mode="sparse"``: ``gqa``, ``kernel``, ``topk``) go to :func:`maskgraph.compile`.
    """
    from ..loader import load_graph

    if not hasattr(model, "set_attn_implementation") or not hasattr(model, "config"):
        raise MaskgraphError(f"expected a transformers PreTrainedModel, got {type(model).__name__}")
    if not isinstance(graph, Graph):
        graph = load_graph(graph, overrides=overrides)
    elif overrides:
        graph = graph.with_overrides(overrides)
    return Injection(
        model,
        graph,
        mode=mode,
        protocol=protocol,
        backend=backend,
        observer=observer,
        chunk_size=chunk_size,
        **sparse_options,
    )


# ----- helpers ---------------------------------------------------------------------------------
_NOTHING = object()


def _checked_beam_idx(beam_idx: Any) -> torch.Tensor:
    """Beam search's row order: a 1-D integer tensor (not bool: a boolean tensor would select
    rows, not order them)."""
    integer = isinstance(beam_idx, torch.Tensor) and not (
        beam_idx.is_floating_point() or beam_idx.is_complex() or beam_idx.dtype == torch.bool
    )
    if not integer or beam_idx.dim() != 1:
        shown = (
            f"{beam_idx.dtype} of shape {tuple(beam_idx.shape)}"
            if isinstance(beam_idx, torch.Tensor)
            else type(beam_idx).__name__
        )
        raise NotSupportedError(f"beam_idx must be a 1-D integer tensor (B,), got {shown}")
    return beam_idx


def _cache_of(obj: Any) -> Any:
    """The KV cache in forward kwargs or outputs (``cache`` in transformers 5, else ``past_key_values``)."""
    get = obj.get if isinstance(obj, dict) else (lambda name: getattr(obj, name, None))
    cache = get("cache")
    return cache if cache is not None else get("past_key_values")


def _valid_length(cache: Any, layer_idx: int, num_keys: int, attention_mask: torch.Tensor | None) -> int:
    """How many of the ``num_keys`` keys a layer received are tokens: fewer than all with
    transformers' static caches, which hand attention their whole preallocated buffer (the
    graphs take key j to be position j, so the padding must go). Reads the static layer's token
    count (a device sync for a full-attention static layer); a static layer without one (older
    transformers) is measured by the last key the boolean mask lets any query attend."""
    layers = getattr(cache, "layers", None)
    if not layers or layer_idx >= len(layers):
        return num_keys
    layer = layers[layer_idx]
    count = getattr(layer, "cumulative_length_int", None)  # static sliding-window layers
    if count is None and getattr(layer, "max_cache_len", None) is not None:
        count = getattr(layer, "cumulative_length", None)  # static full-attention layers
        if count is None:
            if attention_mask is None or attention_mask.dtype != torch.bool:
                raise NotSupportedError(
                    f"layer {layer_idx}: a static cache ({type(layer).__name__}) without a token "
                    "count and without a boolean attention mask; use the default dynamic cache"
                )
            seen = attention_mask.reshape(-1, attention_mask.shape[-1]).any(0)
            count = int(torch.nonzero(seen).max()) + 1 if bool(seen.any()) else num_keys
    if count is None:
        return num_keys
    return min(int(count), num_keys)


def _dropped_tokens(cache: Any, layer_idx: int, num_keys: int) -> int:
    """How many tokens a sliding-window cache layer has dropped before the first of the
    ``num_keys`` keys it handed to attention: the tokens it has seen (a host-side count, updated
    before attention runs) less the keys it holds; 0 for a layer that keeps every token.
    The operators' State is rebuilt when this moves (:meth:`maskgraph.state.State.align`)."""
    layers = getattr(cache, "layers", None)
    if not layers or layer_idx >= len(layers) or not getattr(layers[layer_idx], "is_sliding", False):
        return 0
    layer = layers[layer_idx]
    seen = getattr(layer, "cumulative_length_int", None)  # static sliding-window layers
    if seen is None:
        seen = getattr(layer, "cumulative_length", None)  # dynamic sliding-window layers
    if not isinstance(seen, int):
        raise NotSupportedError(
            f"layer {layer_idx}: a sliding-window cache ({type(layer).__name__}) without a host-side "
            "token count, so maskgraph cannot tell when it rolls; use transformers' DynamicCache "
            "or StaticCache"
        )
    return max(0, seen - num_keys)


def _static_count(cache: Any, layer_idx: int) -> torch.Tensor | None:
    """A static full-attention layer's token count (0-d tensor on its device, updated in place
    by transformers), or None for any other layer (dynamic, sliding window, no cache)."""
    layers = getattr(cache, "layers", None)
    if not layers or layer_idx >= len(layers):
        return None
    layer = layers[layer_idx]
    if getattr(layer, "max_cache_len", None) is None or hasattr(layer, "cumulative_length_int"):
        return None
    count = getattr(layer, "cumulative_length", None)
    return count if isinstance(count, torch.Tensor) and count.dim() == 0 else None


def _num_layers(model: Any) -> int:
    config = model.config
    text = getattr(config, "get_text_config", None)
    config = text() if callable(text) else config
    n = getattr(config, "num_hidden_layers", None)
    if not isinstance(n, int):
        raise MaskgraphError(f"cannot tell how many layers {type(model).__name__} has")
    return n


def _compile_layers(graph: Graph, n_layers: int, backend: str, mode: str, chunk_size, sparse_options=None):
    """layer index -> CompiledAttention (shared between layers whose graphs are equal) or None."""
    by_text: dict[str, CompiledAttention] = {}
    layers: dict[int, CompiledAttention | None] = {}
    for i in range(n_layers):
        g = graph.for_layer(i, n_layers)
        if g is None:
            layers[i] = None
            continue
        text = g.to_yaml()
        if text not in by_text:
            by_text[text] = mg_compile(
                g, backend=backend, mode=mode, chunk_size=chunk_size, **(sparse_options or {})
            )
        layers[i] = by_text[text]
    return layers


def _check_fits_model(layers: dict[int, CompiledAttention | None], model: Any) -> None:
    """Run each node's ``check_model`` hook (calibration files made for another model raise
    CalibrationError) once per distinct layer graph."""
    from ..registry import get_op

    for attn in {id(a): a for a in layers.values() if a is not None}.values():
        for name, node in attn.graph.nodes.items():
            check = get_op(node.op, node=name).check_model
            if check is not None:
                check(attn.graph.node_params(name), model)


def _materialised_mask(*args, **kwargs):
    """transformers' SDPA mask, materialised as bool (B, 1, Q, K) (True = may attend), except
    for a causal prompt on an empty cache, dynamic or static (None: dense SDPA uses
    ``is_causal``, a graph call builds the causal mask itself), which would cost Q·K booleans
    (16 GiB at 128K)."""
    from transformers.masking_utils import sdpa_mask

    if _plain_causal_prompt(kwargs):
        return None
    unpadded_step = _unpadded_decode_step(kwargs)
    kwargs["allow_is_causal_skip"] = False
    kwargs["allow_is_bidirectional_skip"] = False
    mask = sdpa_mask(*args, **kwargs)
    if unpadded_step and isinstance(mask, torch.Tensor) and not requests.compiling():
        mask = mask.contiguous()  # generate() makes a static cache's mask contiguous: the same tensor
        _DECODE_MASKS[id(mask)] = mask
    return mask


#: The masks :func:`_materialised_mask` made for unpadded decode steps, by id (weakly held: an
#: entry goes with its mask).
_DECODE_MASKS: weakref.WeakValueDictionary[int, torch.Tensor] = weakref.WeakValueDictionary()


def _is_decode_mask(mask: torch.Tensor | None) -> bool:
    """Whether ``mask`` is one :func:`_materialised_mask` made for an unpadded decode step: a
    single query that may attend every key up to its own position, and none past it."""
    if requests.compiling():  # traced by torch.compile: the mask is kept (no lookup by id)
        return False
    return mask is not None and _DECODE_MASKS.get(id(mask)) is mask


def _unpadded_decode_step(kwargs: dict) -> bool:
    """The mask asked for is the causal mask of one query with no padding and no window (see
    :func:`_causal_unpadded`)."""
    return kwargs.get("q_length") == 1 and _causal_unpadded(kwargs)


def _plain_causal_prompt(kwargs: dict) -> bool:
    """The mask asked for is the causal mask of Q queries over Q keys (an empty cache), with no
    padding and no window (transformers' own SDPA skip condition; see :func:`_causal_unpadded`)."""
    q, kv = kwargs.get("q_length"), kwargs.get("kv_length")
    if not (isinstance(q, int) and isinstance(kv, int) and 1 < q <= kv):
        return False
    if q < kv and not _first_query_at_zero(kwargs):  # a static buffer longer than the prompt
        return False
    if kwargs.get("allow_is_causal_skip", True) is False:  # the caller needs the mask itself
        return False
    return _causal_unpadded(kwargs)


def _first_query_at_zero(kwargs: dict) -> bool:
    """The queries start at position 0 (an empty cache, e.g. the prefill of a static cache whose
    buffer is longer than the prompt: causal attention aligned top-left, as SDPA's ``is_causal``
    does, never reaches the buffer's empty rows). Read on the host only outside tracing and
    recording."""
    offset = kwargs.get("q_offset")
    if isinstance(offset, torch.Tensor):
        if requests.compiling() or requests.recording() or offset.numel() != 1:
            return False
        offset = int(offset)
    return offset == 0


def _causal_unpadded(kwargs: dict) -> bool:
    """The mask asked for is causal, without a window, and its padding mask (if any) keeps
    every key of [kv_offset, kv_offset + kv_length): read from keyword arguments only; a padding
    mask is read on the host, never while a CUDA graph is recorded (only a missing one counts
    as none then)."""
    from transformers.masking_utils import causal_mask_function

    if kwargs.get("local_size") is not None or kwargs.get("mask_function") is not causal_mask_function:
        return False
    padding = kwargs.get("attention_mask")
    if padding is None:
        return True
    offset, kv = kwargs.get("kv_offset") or 0, kwargs.get("kv_length")
    return (
        isinstance(offset, int)
        and isinstance(kv, int)
        and not requests.recording()
        and bool(padding[:, offset : offset + kv].all())
    )


def _causal(q: int, k: int, device, count: torch.Tensor | None = None) -> torch.Tensor:
    """Bool (1, 1, Q, K): query i, at position end − Q + i, may attend keys j ≤ its position;
    ``end`` is K, or ``count`` (a static layer's token count, a device tensor) when given."""
    end = k if count is None else count
    i = end - q + torch.arange(q, device=device).view(-1, 1)
    j = torch.arange(k, device=device).view(1, -1)
    return (j <= i).view(1, 1, q, k)


_DENSE_WITH_SINKS: dict[str, CompiledAttention] = {}


def _dense(module, query, key, value, attention_mask, dropout, scaling, sinks, kwargs):
    """Dense attention for layers and calls that skip the graph: transformers' SDPA, or the
    ``full`` graph where the module has GPT-OSS sinks (SDPA has no sink logits)."""
    if sinks is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if "full" not in _DENSE_WITH_SINKS:
        _DENSE_WITH_SINKS["full"] = mg_compile("dense")
    if attention_mask is None and query.shape[2] > 1:
        attention_mask = _causal(query.shape[2], key.shape[2], query.device)
    out = _DENSE_WITH_SINKS["full"](query, key, value, attention_mask, scaling, sinks=sinks)
    return out.transpose(1, 2).contiguous(), None
