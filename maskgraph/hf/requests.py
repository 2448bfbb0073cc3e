"""Protocols: which attention calls go through the graph, and where a request starts.

A **request** is one sequence of forward calls that share a KV cache (one ``generate`` call,
or one question answered from a context's cache). Each request gets a fresh
:class:`~maskgraph.state.State`. The :class:`RequestTracker` sees every forward call of the
model (through module hooks) and decides:

- a call whose cache is empty (``past_key_values`` is None or holds no token) starts a new
  request, and is its **prefill**;
- a call whose cache is not the cache the previous call returned (for example a copy of a
  context's cache, as :class:`~maskgraph.hf.session.ContextSession` makes) starts a new
  request too, but it is not a prefill: the tokens it feeds continue a context that is already
  cached (the question);
- any other call continues the current request (decode steps).

Beam search reorders the current request's cache between its calls; the injection moves the
request's State with it (the model's ``_reorder_cache`` hook, :mod:`maskgraph.hf.inject`). A
call that continues a request whose cache rows were replaced since its last call (same shapes,
other tensors: a reorder the injection did not see) while the State holds something raises
NotSupportedError: that State describes other rows now.

Protocols:

- ``dense_prefill`` (default): the prefill call of a request runs dense attention; every later
  call (the question fed after a cached context, every generated token) goes through the
  graph. So with a plain ``model.generate(prompt)`` the whole prompt is the dense context and
  the generated tokens are sparse; to send a question through the graph, prefill the context
  first (``ContextSession``) or feed the question as a second call on the same cache.
- ``sparse``: every attention call goes through the graph, prefill included.

Inside ``with handle.dense():`` every call runs dense attention whatever the protocol.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from ..errors import NotSupportedError
from ..state import State

PROTOCOLS = ("dense_prefill", "sparse")


class RequestTracker:
    """Per-model request bookkeeping: the current State and whether this call is a prefill."""

    def __init__(self, protocol: str) -> None:
        if protocol not in PROTOCOLS:
            raise NotSupportedError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        self.state = State()
        self.requests = 0
        self.in_prefill = False
        self.forced_dense = 0
        self._last_cache: weakref.ReferenceType | None = None
        self._last_rows: list[tuple[weakref.ReferenceType, tuple[int, ...]] | None] = []

    def before_forward(self, cache: Any) -> None:
        """Called with the ``past_key_values`` a forward call receives (may be None). A call
        that ``torch.compile`` traces continues its request: transformers compiles the decode
        steps of ``generate`` only, after an eager prefill (nothing is read on the host)."""
        if compiling():
            self.in_prefill = False
            return
        empty = cache is None or _cache_length(cache) == 0
        last = self._last_cache() if self._last_cache is not None else None
        if empty or cache is not last:
            self.new_request()
        elif not recording() and self.state.holds_anything() and _replaced(cache, self._last_rows):
            raise NotSupportedError(
                "the cache's key rows were replaced since the last call of this request (a reorder "
                "mg.inject did not see: cache.reorder_cache called directly, or beam search run on a "
                "model that wraps the injected one), so the operators' State describes other rows; "
                "inject the model you call generate on, reorder through "
                "model._reorder_cache(cache, beam_idx) (which mg.inject sets), or start a new "
                "request (handle.new_request())"
            )
        self.in_prefill = empty

    def after_forward(self, cache: Any) -> None:
        """Called with the ``past_key_values`` a forward call returned (may be None)."""
        self.in_prefill = False
        if compiling():
            return
        self.continue_with(cache)

    def holds(self, cache: Any) -> bool:
        """Whether ``cache`` is the current request's: the cache its last call returned."""
        last = self._last_cache() if self._last_cache is not None else None
        return cache is not None and cache is last

    def continue_with(self, cache: Any) -> None:
        """The current request goes on with ``cache`` (what a reorder of its cache returned, when
        that is another object), its rows as they are now (recorded only while the State holds
        something: a stateless graph's decode steps skip the walk over the layers)."""
        self._last_cache = _weak(cache)
        self._last_rows = _key_rows(cache) if self.state.holds_anything() else []

    def new_request(self) -> None:
        """Start a new request: fresh operator state."""
        self.state = State()
        self.requests += 1

    def routes_through_graph(self) -> bool:
        """True when the current attention call must go through the graph."""
        if self.forced_dense:
            return False
        if self.protocol == "dense_prefill" and self.in_prefill:
            return False
        return True


def _key_rows(cache: Any) -> list[tuple[weakref.ReferenceType, tuple[int, ...]] | None]:
    """The key tensor of each layer of ``cache`` (weakly held) and its shape; None for a layer
    without one."""
    rows = []
    for layer in getattr(cache, "layers", None) or ():
        keys = getattr(layer, "keys", None)
        rows.append((weakref.ref(keys), tuple(keys.shape)) if isinstance(keys, torch.Tensor) else None)
    return rows


def _replaced(cache: Any, rows: list[tuple[weakref.ReferenceType, tuple[int, ...]] | None]) -> bool:
    """Whether a layer of ``cache`` holds another key tensor of the same shape as ``rows``
    recorded (rows moved by a reorder; a cache that grew or shrank is told apart by its length)."""
    now = getattr(cache, "layers", None) or ()
    if len(now) != len(rows):
        return False
    for layer, seen in zip(now, rows):
        keys = getattr(layer, "keys", None)
        if seen is None or not isinstance(keys, torch.Tensor):
            continue
        ref, shape = seen
        if ref() is not keys and tuple(keys.shape) == shape:
            return True
    return False


def _cache_length(cache: Any) -> int:
    get = getattr(cache, "get_seq_length", None)
    if not callable(get):
        return 1
    if recording():
        return 1  # a step being recorded into a CUDA graph continues its request (no host read)
    return int(get())


def compiling() -> bool:
    """True while ``torch.compile`` traces the call (Python state is then read once, at
    tracing, and nothing may be read on the host)."""
    return torch.compiler.is_compiling()


def recording() -> bool:
    """True while a CUDA graph is being recorded on the current stream (nothing may be read
    on the host then)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _weak(obj: Any) -> weakref.ReferenceType | None:
    if obj is None:
        return None
    try:
        return weakref.ref(obj)
    except TypeError:  # objects without weakref support: compare by a strong reference
        return lambda: obj  # type: ignore[return-value]
