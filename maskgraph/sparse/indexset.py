"""Index sets: a 0/1 mask held as a fixed-size list of key positions, padded and masked.

An :class:`IndexSet` stands for the keys a mask keeps for one query chunk:

- ``idx`` int64 (b, h, Qc|1, n): key positions, b ∈ {1, B}, h ∈ {1, Hsel} (Hsel = Hq when
  query heads own their selections, Hkv when a KV group shares one);
- ``valid`` bool, broadcastable with ``idx``: False marks padding (and duplicates removed by a
  union); an invalid entry may hold any position, it is never attended;
- ``contains(j)``: membership of positions ``j`` (int64 (b', h', Qc|1, m)) as bool, broadcast
  against the set's own leading dimensions. Ranges (sink, local window) answer elementwise;
  selections answer through a (b, h, Qc, K) bitmap built on demand;
- ``leaves``: names of the leaf nodes the set is made of, ``excludes``: leaf names known to be
  disjoint from it (top-k never picks a key of its prior), so unions skip needless checks.

``n`` is static for a given K (sink + window + k for the usual graphs), so a decode step has a
fixed shape and no host synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class IndexSet:
    """Key positions a mask keeps (see module docstring for shapes)."""

    idx: torch.Tensor
    valid: torch.Tensor
    contains: Callable[[torch.Tensor], torch.Tensor]
    cheap: bool
    leaves: frozenset[str]
    excludes: frozenset[str] = field(default_factory=frozenset)

    @property
    def size(self):
        """The padded number of entries n (an int, symbolic under torch.compile)."""
        return self.idx.shape[-1]


def range_set(
    name: str, start: torch.Tensor, count, contains: Callable[[torch.Tensor], torch.Tensor], limit
) -> IndexSet:
    """Positions ``start + 0..count−1`` kept where ``0 ≤ position < limit``.

    start: int64 (1, 1, Qc|1, 1) first position per query; count: static length; limit: K.
    """
    pos = start + torch.arange(count, device=start.device).view(1, 1, 1, -1)
    valid = (pos >= 0) & (pos < limit)
    return IndexSet(pos.clamp(0, limit - 1), valid, contains, True, frozenset([name]))


def bitmap_contains(idx: torch.Tensor, valid: torch.Tensor, num_keys) -> Callable:
    """Membership through a (b, h, Qc, K) bool bitmap of the valid positions of ``idx``."""
    cache: list[torch.Tensor] = []

    def contains(j: torch.Tensor) -> torch.Tensor:
        if not cache:
            lead = torch.broadcast_shapes(idx.shape[:3], valid.shape[:3])
            bitmap = torch.zeros(*lead, num_keys, dtype=torch.bool, device=idx.device)
            ix = idx.expand(*lead, idx.shape[-1])
            cache.append(bitmap.scatter(-1, ix, valid.expand(ix.shape)))
        bitmap = cache[0]
        lead = torch.broadcast_shapes(bitmap.shape[:3], j.shape[:3])
        return torch.gather(bitmap.expand(*lead, num_keys), -1, j.expand(*lead, j.shape[-1]))

    return contains


def selection_set(
    name: str, idx: torch.Tensor, valid: torch.Tensor, num_keys, excludes: frozenset[str]
) -> IndexSet:
    """A data-dependent selection (top-k): idx/valid (b, h, Qc, n)."""
    return IndexSet(idx, valid, bitmap_contains(idx, valid, num_keys), False, frozenset([name]), excludes)


def _lead(sets: list[IndexSet]) -> tuple[int, ...]:
    shapes = [torch.broadcast_shapes(s.idx.shape[:3], s.valid.shape[:3]) for s in sets]
    return tuple(torch.broadcast_shapes(*shapes))


def union(name: str, sets: list[IndexSet]) -> IndexSet:
    """Keys kept by any set, each once: later parts drop entries an earlier part holds.

    Parts with cheap membership go first, so a selection is checked against ranges, never the
    other way round; a part known to exclude an earlier one skips the check.
    """
    ordered = sorted(sets, key=lambda s: not s.cheap)
    lead = _lead(ordered)
    idx_parts, valid_parts = [], []
    for i, part in enumerate(ordered):
        valid = part.valid
        for prev in ordered[:i]:
            if prev.leaves <= part.excludes:
                continue
            valid = valid & ~prev.contains(part.idx)
        idx_parts.append(part.idx.expand(*lead, part.size))
        valid_parts.append(valid.expand(*lead, part.size))

    def contains(j: torch.Tensor) -> torch.Tensor:
        out = ordered[0].contains(j)
        for part in ordered[1:]:
            out = out | part.contains(j)
        return out

    leaves = frozenset().union(*(s.leaves for s in ordered))
    excludes = frozenset.intersection(*(s.excludes for s in ordered))
    return IndexSet(
        torch.cat(idx_parts, dim=-1),
        torch.cat(valid_parts, dim=-1),
        contains,
        all(s.cheap for s in ordered),
        leaves | frozenset([name]),
        excludes,
    )


def intersection(name: str, a: IndexSet, b: IndexSet) -> IndexSet:
    """Keys of ``a`` that ``b`` also keeps (a's entries, filtered)."""
    return IndexSet(
        a.idx,
        a.valid & b.contains(a.idx),
        lambda j: a.contains(j) & b.contains(j),
        a.cheap and b.cheap,
        frozenset([name]),
        a.excludes | b.excludes,
    )


def difference(name: str, a: IndexSet, b: IndexSet) -> IndexSet:
    """Keys of ``a`` that ``b`` does not keep."""
    return IndexSet(
        a.idx,
        a.valid & ~b.contains(a.idx),
        lambda j: a.contains(j) & ~b.contains(j),
        a.cheap and b.cheap,
        frozenset([name]),
        a.excludes,
    )
