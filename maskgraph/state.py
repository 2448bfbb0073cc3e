"""Per-request operator state, keyed by (layer, node).

Operators that learn or cache something about the keys (PQ codebooks and codes, hash
signatures, page summaries, projections) keep it in their slot of a :class:`State`. Slots are
plain dicts owned by one operator at one layer: layers never share a slot. A new request uses a
new State (or :meth:`State.reset`).

A sliding-window cache drops its oldest tokens as new ones come, so the count of keys can stay
the same while every key moves: the slots of a layer describe the keys of its last call only
while ``keys[:, :, 0]`` is the same token. :meth:`State.align` records that token's position
(``kv_offset``, the tokens the cache has dropped) per layer and forgets the layer's slots when
it moves, so the operators rebuild them from the keys they are given.

Beam search reorders the rows of the cache between steps (row b takes what row
``beam_idx[b]`` held). :meth:`State.reorder_rows` moves a slot's per-row entries the same way; each
operator names those entries in the registry (``batch_rows=``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import MaskgraphError, ShapeError


class State:
    """Caches of stateful operators for one request: ``state.slot(layer, node)`` -> dict."""

    def __init__(self) -> None:
        self._slots: dict[tuple[int, str], dict[str, Any]] = {}
        self._offsets: dict[int, int] = {}

    def slot(self, layer_idx: int, node: str) -> dict[str, Any]:
        """The (created on first use) cache dict of ``node`` at ``layer_idx``."""
        return self._slots.setdefault((int(layer_idx), node), {})

    def peek(self, layer_idx: int, node: str) -> dict[str, Any] | None:
        """The cache dict of ``node`` at ``layer_idx`` if one was made, else None (none is made)."""
        return self._slots.get((int(layer_idx), node))

    def reorder_rows(self, layer_idx: int, node: str, names: Sequence[str], beam_idx: torch.Tensor) -> None:
        """Move the batch rows of the slot's entries ``names`` as beam search moves the cache's:
        each such entry is a tensor (B, …), and row b takes what row ``beam_idx[b]`` held
        (``beam_idx`` (B,) integer). Entries that are one tensor stay one tensor. A named entry
        the slot does not hold (or holds as None) is skipped — not written yet, or dropped until
        the next call rebuilds it: there is nothing of it to move; a missing slot likewise.

        A slot built over a static key buffer (its ``"static"`` entry set, as
        :func:`maskgraph.static_keys.row_caches` and Quest mark it) is reordered in place: its
        tensors keep their addresses, which :func:`maskgraph.static_keys.pin_addresses` promised
        to the decode steps that rewrite them. Any other slot gets new tensors. Raises
        ShapeError (:meth:`check_rows`) before anything moves."""
        self.check_rows(layer_idx, node, names, beam_idx)
        slot = self._slots.get((int(layer_idx), node))
        if not slot:
            return
        in_place = slot.get("static") is not None
        entries = {name: slot[name] for name in names if slot.get(name) is not None}
        moved: dict[int, torch.Tensor] = {}  # by id of the entry (all alive in ``entries``)
        for name, entry in entries.items():
            if id(entry) not in moved:
                rows = entry.index_select(0, beam_idx.to(entry.device))
                moved[id(entry)] = entry.copy_(rows) if in_place else rows
            slot[name] = moved[id(entry)]

    def check_rows(self, layer_idx: int, node: str, names: Sequence[str], beam_idx: torch.Tensor) -> None:
        """Raise ShapeError, naming the layer, node and entry, where an entry ``names`` of the
        slot that :meth:`reorder_rows` would move is not a tensor of ``beam_idx.shape[0]`` rows."""
        slot = self._slots.get((int(layer_idx), node)) or {}
        for name in names:
            entry = slot.get(name)
            if entry is None:
                continue
            where = f"layer {layer_idx}, node '{node}', state entry '{name}'"
            if not isinstance(entry, torch.Tensor) or entry.dim() == 0:
                raise ShapeError(
                    f"{where}: a per-row entry must be a tensor (B, ...), got {_described(entry)}"
                )
            if entry.shape[0] != beam_idx.shape[0]:
                raise ShapeError(
                    f"{where}: holds {entry.shape[0]} rows, the reordered cache {beam_idx.shape[0]}"
                )

    def align(self, layer_idx: int, kv_offset: int | None) -> bool:
        """Note that the keys of this call of ``layer_idx`` start at token ``kv_offset`` (the
        count of tokens its cache has dropped; ``None`` = unknown, taken as unchanged). When it
        differs from the last call's (0 before any), forget the layer's slots. Returns whether
        they were forgotten."""
        layer = int(layer_idx)
        last = self._offsets.get(layer, 0)
        if kv_offset is None or int(kv_offset) == last:
            return False
        if int(kv_offset) < 0:
            raise MaskgraphError(f"kv_offset must be >= 0 (tokens dropped by the cache), got {kv_offset}")
        self._offsets[layer] = int(kv_offset)
        for key in [key for key in self._slots if key[0] == layer]:
            del self._slots[key]
        return True

    def reset(self) -> None:
        """Forget everything (start a new request)."""
        self._slots.clear()
        self._offsets.clear()

    def holds_anything(self) -> bool:
        """Whether any slot holds an entry."""
        return any(self._slots.values())

    def keys(self) -> list[tuple[int, str]]:
        """The (layer, node) pairs that hold state."""
        return list(self._slots)

    def __len__(self) -> int:
        return len(self._slots)

    def __repr__(self) -> str:
        return f"State({len(self._slots)} slots)"


def _described(entry: Any) -> str:
    if isinstance(entry, torch.Tensor):
        return f"a tensor of shape {tuple(entry.shape)}"
    return type(entry).__name__


@dataclass(frozen=True)
class Observation:
    """The queries of one attention call, as an operator that declares ``observes=True``
    receives them in ``prepare(..., observed=...)`` (docs/writing-an-operator.md, "Operators
    that watch the queries").

    ``queries`` (B, Hq, Q, D) post-RoPE, in the call's dtype; query i sits at position
    ``K − Q + i``. ``attention_mask``: additive float32, broadcastable to (B, Hq, Q, K), or
    None where the call's attention allows every key (a dense prefill's causal mask is
    always given). ``scaling``: the logit scale. ``dense``:
    True where the call itself runs dense attention (a prefill under protocol
    ``dense_prefill``), so that the graph's mask is not applied to it.
    """

    queries: torch.Tensor
    attention_mask: torch.Tensor | None
    scaling: float
    dense: bool = False


@dataclass(frozen=True)
class AttentionFeedback:
    """What an operator that declares ``feedback=`` receives after a call's attention,
    computed inside that attention (no second pass over the keys).

    ``key_mass`` (B, Hq, K) float32: Σ over the call's queries of each key's attention
    probability (its normalised weight exp(s − m)/p / Σ); 0 for keys the call did not attend.
    ``last`` (B, Hq, K) float32: the probabilities of the call's last query alone.
    """

    key_mass: torch.Tensor
    last: torch.Tensor
