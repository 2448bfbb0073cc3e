"""Greedy decoding with every step replayed from one recorded CUDA graph.

A decode step of a transformers model costs milliseconds of Python (module calls, dynamo
guards, kernel launches) for microseconds of GPU work; recorded once as a CUDA graph, each
later step is one replay. That needs a step whose work never depends on a value read on the
host: transformers' static cache (positions and token counts live on the device), and
attention that reads the cache's whole buffer with its token count as a tensor — what
``mg.inject(..., mode="sparse")`` does on a static cache (:mod:`maskgraph.static_keys`).

    decoder = GraphedDecoder(model, max_cache_len=4096)
    tokens = decoder.generate(input_ids, max_new_tokens=64)     # (B, 64)

The prompt is prefilled by a plain forward call on a dynamic cache (dense, or through an
injected graph, as the injection's protocol says) and copied into the static cache; the first ``warmup`` steps run eagerly (they compile, and build
the estimators' caches), the step after them is recorded, and every further token is a replay.
``record=False`` runs every step eagerly (the same step function: how the CPU tests check it).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from ..errors import NotSupportedError


class GraphedDecoder:
    """Greedy decoding of ``model`` on a static cache of ``max_cache_len`` tokens.

    ``record``: replay steps from a CUDA graph (default: on CUDA); ``warmup``: eager steps
    before recording, at least 2 (the first builds the estimator caches on the static cache,
    the second compiles their row updates). After :meth:`generate`, ``steps_recorded`` and ``steps_replayed`` say
    how the tokens were made.
    """

    def __init__(self, model: Any, max_cache_len: int, record: bool | None = None, warmup: int = 2):
        self.model = model
        self.max_cache_len = int(max_cache_len)
        self.device = next(model.parameters()).device
        self.record = self.device.type == "cuda" if record is None else bool(record)
        if self.record and self.device.type != "cuda":
            raise NotSupportedError(f"record=True needs a CUDA model, this one is on {self.device}")
        if warmup < 2:
            raise NotSupportedError(
                f"warmup must be ≥ 2 (the first step builds the estimator caches, the second "
                f"compiles their in-place row updates; nothing may compile while recording), got {warmup}"
            )
        self.warmup = warmup
        # transformers ≥ 5.2x names the forward's cache argument ``cache``
        takes = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in takes else "past_key_values"
        self.cache: Any = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.steps_recorded = 0
        self.steps_replayed = 0

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Run the prompt ``input_ids`` (B, L) through the model on a dynamic cache (no (L, Kmax)
        mask is built), copy its keys and values into a fresh static cache; returns the first
        new token (B, 1)."""
        from transformers import DynamicCache, StaticCache

        b, length = input_ids.shape
        if length >= self.max_cache_len:
            raise NotSupportedError(
                f"a prompt of {length} tokens leaves no room in max_cache_len={self.max_cache_len}"
            )
        cache = StaticCache(config=self.model.config, max_cache_len=self.max_cache_len)
        sliding = [type(layer).__name__ for layer in cache.layers if hasattr(layer, "cumulative_length_int")]
        if sliding:
            raise NotSupportedError(
                f"{type(self.model).__name__} has sliding-window layers ({sliding[0]}); GraphedDecoder "
                "copies the prompt into full-attention static layers only"
            )
        prompt = DynamicCache(config=self.model.config)
        with torch.no_grad():
            out = self.model(
                input_ids=input_ids.to(self.device),
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_kw: prompt},
            )
            for static, dynamic in zip(cache.layers, prompt.layers):
                static.update(dynamic.keys, dynamic.values)
        del prompt
        self.cache = cache
        self.graph = None
        self._token = out.logits[:, -1:].argmax(-1)
        self._position = torch.full((b, 1), length, device=self.device, dtype=torch.long)
        self._cache_position = torch.full((1,), length, device=self.device, dtype=torch.long)
        return self._token.clone()

    def step(self) -> None:
        """One decode step on the static inputs: feeds the current token, stores the next one
        in place and advances the positions (all on the device)."""
        with torch.no_grad():
            out = self.model(
                input_ids=self._token,
                **{self._cache_kw: self.cache},
                cache_position=self._cache_position,
                position_ids=self._position,
                use_cache=True,
            )
            self._token.copy_(out.logits[:, -1:].argmax(-1))
            self._position.add_(1)
            self._cache_position.add_(1)

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy continuation of ``input_ids`` (B, L), no padding: the new tokens
        (B, max_new_tokens)."""
        if max_new_tokens < 1:
            raise NotSupportedError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
        if input_ids.shape[1] + max_new_tokens > self.max_cache_len:
            raise NotSupportedError(
                f"{input_ids.shape[1]} prompt + {max_new_tokens} new tokens exceed max_cache_len={self.max_cache_len}"
            )
        tokens = [self.prefill(input_ids)]
        for i in range(max_new_tokens - 1):
            self.advance(i)
            tokens.append(self._token.clone())
        return torch.cat(tokens, dim=1)

    def advance(self, index: int) -> None:
        """Step ``index`` after the prefill: eager during the warm-up, then recorded once and
        replayed."""
        if not self.record:
            self.step()
            return
        if index < self.warmup:  # on a side stream, as CUDA graph recording expects
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self.step()
            torch.cuda.current_stream(self.device).wait_stream(side)
            return
        if self.graph is None:
            self._record()
        self.graph.replay()
        self.steps_replayed += 1

    def _record(self) -> None:
        torch.cuda.synchronize(self.device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.step()  # recorded, not run: the replay that follows makes this token
        self.steps_recorded += 1
