"""Per-request operator state, keyed by (layer, node).

Operators that learn or cache something about the keys (PQ codebooks and codes, hash
signatures, page summaries, projections) keep it in their slot of a :class:`State`. Slots are
plain dicts owned by one operator at one layer: layers never share a slot. A new request uses a
new State (or :meth:`State.reset`).
"""

from __future__ import annotations

from typing import Any


class State:
    """Caches of stateful operators for one request: ``state.slot(layer, node)`` -> dict."""

    def __init__(self) -> None:
        self._slots: dict[tuple[int, str], dict[str, Any]] = {}

    def slot(self, layer_idx: int, node: str) -> dict[str, Any]:
        """The (created on first use) cache dict of ``node`` at ``layer_idx``."""
        return self._slots.setdefault((int(layer_idx), node), {})

    def reset(self) -> None:
        """Forget everything (start a new request)."""
        self._slots.clear()

    def keys(self) -> list[tuple[int, str]]:
        """The (layer, node) pairs that hold state."""
        return list(self._slots)

    def __len__(self) -> int:
        return len(self._slots)

    def __repr__(self) -> str:
        return f"State({len(self._slots)} slots)"
