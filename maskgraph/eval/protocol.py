"""Running one sample under a protocol: context prefill, question, greedy decode; perplexity.

Protocols (docs/huggingface.md, "Requests and protocols"):

- ``dense_prefill`` (default): the context is prefilled densely **once per sample** (without
  any graph) and its KV cache is copied for every graph; the question and every generated
  token go through the graph (the injection's tracker sees a cache it did not return, so it
  starts a request that is not a prefill);
- ``sparse``: the context prefill goes through the graph too.

Batch size is 1 throughout; tensors are (1, L) token ids.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import MaskgraphError

PROTOCOLS = ("dense_prefill", "sparse")


@dataclass
class Context:
    """A densely prefilled context: its token ids (1, C) and KV cache."""

    ids: torch.Tensor
    cache: Any


def encode(tokenizer, text: str, device: str, special: bool) -> torch.Tensor:
    """Token ids (1, L) of ``text``; ``special`` adds the tokenizer's BOS-like tokens."""
    ids = tokenizer.encode(text, add_special_tokens=special)
    if not ids:
        raise MaskgraphError("empty prompt piece after tokenisation")
    return torch.tensor([ids], dtype=torch.long, device=device)


@torch.no_grad()
def prefill(model, ids: torch.Tensor, cache: Any = None) -> tuple[Any, torch.Tensor]:
    """Forward ``ids`` (1, L) on ``cache`` (a new one if None); returns (cache, logits (1, L, V))."""
    if cache is None:
        from transformers import DynamicCache

        cache = DynamicCache()
    out = model(input_ids=ids, cache=cache, use_cache=True)
    returned = getattr(out, "cache", None)
    return (returned if returned is not None else out.past_key_values), out.logits


def dense_context(model, tokenizer, text: str, device: str) -> Context:
    """Prefill ``text`` with the model's own (dense) attention."""
    ids = encode(tokenizer, text, device, special=True)
    cache, _ = prefill(model, ids)
    return Context(ids=ids, cache=cache)


@torch.no_grad()
def greedy(model, cache: Any, question: torch.Tensor, max_new_tokens: int, eos: set[int]) -> list[int]:
    """Feed ``question`` (1, L) on ``cache``, then decode greedily up to ``max_new_tokens``
    tokens (stopping after an EOS token); returns the generated ids."""
    cache, logits = prefill(model, question, cache)
    out: list[int] = []
    for step in range(max_new_tokens):
        tok = int(logits[0, -1].argmax())
        out.append(tok)
        if tok in eos or step == max_new_tokens - 1:
            break
        cache, logits = prefill(model, torch.tensor([[tok]], device=question.device), cache)
    return out


def eos_ids(tokenizer, model) -> set[int]:
    ids = set()
    for source in (
        getattr(tokenizer, "eos_token_id", None),
        getattr(model.generation_config, "eos_token_id", None),
    ):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(i) for i in source)
    return ids


def answer(
    model,
    tokenizer,
    context_text: str,
    question_text: str,
    max_new_tokens: int,
    *,
    protocol: str,
    device: str,
    context: Context | None = None,
) -> list[int]:
    """Greedy answer ids to ``question_text`` after ``context_text``.

    ``dense_prefill`` reuses ``context`` (a dense prefill, copied so it can be reused);
    ``sparse`` prefills the context in this call (inside whatever injection is active).
    """
    question = encode(tokenizer, question_text, device, special=False)
    eos = eos_ids(tokenizer, model)
    if protocol == "dense_prefill":
        if context is None:
            context = dense_context(model, tokenizer, context_text, device)
        cache = copy.deepcopy(context.cache)
    elif protocol == "sparse":
        cache, _ = prefill(model, encode(tokenizer, context_text, device, special=True))
    else:
        raise MaskgraphError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    return greedy(model, cache, question, max_new_tokens, eos)


@torch.no_grad()
def window_nll(
    model, ids: torch.Tensor, context_len: int, *, protocol: str, context: Context | None = None
) -> tuple[float, int]:
    """Summed negative log-likelihood and count of tokens ``ids[:, context_len+1:]`` of one
    window (1, W), predicted by a forward of ``ids[:, context_len:]`` after the first
    ``context_len`` tokens (dense prefill, or through the graph under ``sparse``)."""
    w = ids.shape[1]
    if not 0 < context_len < w - 1:
        raise MaskgraphError(f"context length {context_len} must be in (0, {w - 1}) for a window of {w}")
    targets = ids[0, context_len + 1 :]
    if protocol == "dense_prefill":
        if context is None:
            cache, _ = prefill(model, ids[:, :context_len])
        else:
            cache = copy.deepcopy(context.cache)
        _, logits = prefill(model, ids[:, context_len:], cache)
        logits = logits[0, :-1]
    elif protocol == "sparse":
        _, logits = prefill(model, ids)
        logits = logits[0, context_len:-1]
    else:
        raise MaskgraphError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    return float(nll), int(targets.numel())
