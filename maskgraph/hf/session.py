"""Context/question API: prefill a long context once, answer several questions from copies of its cache.

    session = mg.hf.ContextSession(model, tokenizer, "oracle_topk")
    session.prefill(long_document)                  # dense (protocol dense_prefill)
    session.ask("Who found the key?", max_new_tokens=24)          # question + answer: sparse
    session.ask("Who found the key?", max_new_tokens=24, dense=True)  # same cache, all dense

Each ``ask`` starts a new request (fresh operator State) on a deep copy of the context's cache,
so questions never see each other's tokens.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch

from ..errors import MaskgraphError
from .inject import Injection, inject


class ContextSession:
    """A model, its tokenizer and an injected graph, plus one cached context.

    ``graph`` is an :class:`Injection` already made on ``model`` or anything :func:`inject`
    accepts (then ``inject_kwargs`` go to it; the session removes that injection in
    :meth:`close`).
    """

    def __init__(self, model: Any, tokenizer: Any, graph: Any, **inject_kwargs) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self._owns = not isinstance(graph, Injection)
        self.handle = inject(model, graph, **inject_kwargs) if self._owns else graph
        self.context_ids: torch.Tensor | None = None
        self.cache: Any = None

    def prefill(self, context: str | torch.Tensor) -> int:
        """Run the context (text or (1, L) token ids) once and keep its cache; returns L.

        Under protocol ``dense_prefill`` this call is dense; under ``sparse`` it goes through
        the graph. The text is tokenized with the tokenizer's special tokens (e.g. BOS).
        """
        ids = self._ids(context, special=True)
        device = next(self.model.parameters()).device
        ids = ids.to(device)
        with torch.no_grad():
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        self.context_ids = ids
        self.cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        return int(ids.shape[1])

    def ask(
        self,
        question: str | torch.Tensor,
        max_new_tokens: int = 32,
        dense: bool = False,
        **generate_kwargs,
    ) -> str:
        """Feed ``question`` after the cached context and generate; returns the decoded answer.

        The question and every generated token go through the graph (``dense=True``: all
        dense, for comparison). ``generate_kwargs`` go to ``model.generate`` (greedy unless
        ``do_sample=True`` is passed).
        """
        if self.cache is None or self.context_ids is None:
            raise MaskgraphError("ContextSession.ask: call prefill(context) first")
        q_ids = self._ids(question, special=False).to(self.context_ids.device)
        ids = torch.cat([self.context_ids, q_ids], dim=1)
        generate_kwargs.setdefault("do_sample", False)
        if self.tokenizer is not None and self.tokenizer.pad_token_id is None:
            generate_kwargs.setdefault("pad_token_id", self.tokenizer.eos_token_id)
        scope = self.handle.dense() if dense else contextlib.nullcontext()
        with scope, torch.no_grad():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                cache=copy.deepcopy(self.cache),
                max_new_tokens=max_new_tokens,
                **generate_kwargs,
            )
        new = out[0, ids.shape[1] :]
        if self.tokenizer is None:
            return " ".join(str(int(t)) for t in new)
        return self.tokenizer.decode(new, skip_special_tokens=True)

    def close(self) -> None:
        """Remove the injection if this session made it."""
        if self._owns:
            self.handle.remove()

    def __enter__(self) -> ContextSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ids(self, text: str | torch.Tensor, special: bool) -> torch.Tensor:
        if isinstance(text, torch.Tensor):
            return text.view(1, -1) if text.dim() == 1 else text
        if self.tokenizer is None:
            raise MaskgraphError("ContextSession: pass token ids, or give the session a tokenizer")
        return self.tokenizer(text, return_tensors="pt", add_special_tokens=special).input_ids
