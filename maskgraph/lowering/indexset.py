"""Index sets: a 0/1 mask held as fixed-size lists of key positions, padded and masked.

An :class:`IndexSet` stands for the keys a mask keeps for one query chunk. It is a list of
:class:`Part` s, each

- ``idx`` int64 (b, h, Qc|1, n): key positions, b ∈ {1, B}, h ∈ {1, Hsel} (Hsel = Hq when
  query heads own their selections, Hkv when a KV group shares one);
- ``valid`` bool, broadcastable with ``idx``: False marks padding and entries another part
  already holds; an invalid entry may hold any position, it is never attended;
- ``span``: ``(start, length)`` when the part is the contiguous run ``start + 0..length−1`` for
  every row, head and query of the chunk (sink, local window, causal): attention then reads a
  slice of the cache instead of gathering.

The set answers ``contains(j)``: membership of positions ``j`` (int64 (b', h', Qc|1, m)) as bool,
broadcast against its own leading dimensions. Ranges answer arithmetically; selections through
a (b, h, Qc, K) bitmap built on demand. ``leaves`` names the leaf nodes the set is made of and
``excludes`` the leaves known to be disjoint from it (top-k never picks a key of its prior), so
unions skip needless checks. ``intervals``, where known, states the membership as at most a
few half-open runs per query: query q of the chunk (0-based) keeps j exactly when
``lo + slope·q ≤ j < hi + slope·q`` for one of the ``(lo, hi, slope)`` (ints, symbolic under
torch.compile); the Triton top-k then drops a prior's keys itself instead of a masking pass.

A part may also say how the fused decode kernel reads it without a list: ``run`` (a span
whose membership is one ``(lo, hi, slope)`` run) or ``listed`` (a selection as the top-k wrote
it, :class:`Listed`). Both survive a union's check against earlier sets of runs (the kernel
drops a run's keys from later runs and listed keys from every run itself); any other change of
``valid`` drops them, and the kernel then reads the concatenated lists.

Sizes are static for a given K (sink + window + k for the usual graphs), so a decode step has a
fixed shape and no host synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..env import int_max, int_min


@dataclass(frozen=True)
class Listed:
    """A selection as the top-k wrote it: entry e of ``idx`` (b, h, Qc, n) int64 stands for the
    keys idx·page … idx·page + page − 1 and is kept where ``vals`` (same shape, float32) > −inf;
    of its keys, those below K and outside the selection's prior are members. The prior is made
    of the runs of the span nodes ``prior_spans`` (the set must hold them as runs: the kernel
    drops a listed key of any run)."""

    idx: torch.Tensor
    vals: torch.Tensor
    page: int = 1
    prior_spans: frozenset[str] = frozenset()


@dataclass
class Part:
    """Positions ``idx`` kept where ``valid``; ``span`` = (start, length) for a contiguous run;
    ``run``/``listed``: the part in the fused kernel's terms (module docstring), if it has them."""

    idx: torch.Tensor
    valid: torch.Tensor
    span: tuple[Any, Any] | None = None
    run: tuple[Any, Any, int] | None = None
    listed: Listed | None = None
    source: str | None = None  # the span node a run comes from

    @property
    def size(self):
        return self.idx.shape[-1]

    @property
    def lead(self) -> tuple[int, ...]:
        return tuple(torch.broadcast_shapes(self.idx.shape[:3], self.valid.shape[:3]))

    def with_valid(self, valid: torch.Tensor) -> Part:
        """The part kept where ``valid`` instead (no longer in the kernel's terms)."""
        return Part(self.idx, valid, self.span)


@dataclass
class IndexSet:
    """Key positions a mask keeps, as parts (see module docstring)."""

    parts: list[Part]
    contains: Callable[[torch.Tensor], torch.Tensor]
    cheap: bool
    leaves: frozenset[str]
    excludes: frozenset[str] = field(default_factory=frozenset)
    intervals: tuple[tuple[Any, Any, int], ...] | None = None

    @property
    def lead(self) -> tuple[int, ...]:
        return tuple(torch.broadcast_shapes(*(p.lead for p in self.parts)))

    @property
    def idx(self) -> torch.Tensor:
        """All positions, (b, h, Qc, Σn), parts concatenated."""
        lead = self.lead
        return torch.cat([p.idx.expand(*lead, p.size) for p in self.parts], dim=-1)

    @property
    def valid(self) -> torch.Tensor:
        lead = self.lead
        return torch.cat([p.valid.expand(*lead, p.size) for p in self.parts], dim=-1)

    @property
    def size(self):
        return sum(p.size for p in self.parts)


def span_set(
    name: str,
    start,
    length,
    member: Callable,
    num_keys,
    device: torch.device,
    interval: tuple[Any, Any, int] | None = None,
) -> IndexSet:
    """The run ``start + 0..length−1`` clipped to the keys, kept where ``member(pos)``;
    ``interval``: ``member`` as one (lo, hi, slope) run (see the module docstring), if it is one.

    ``start``/``length``: ints (symbolic under torch.compile), ``start`` may be a 0-d tensor
    (a static buffer's query position: the run is then read by one index_select); ``member`` maps positions
    (1, 1, 1, L) to bool (1, 1, Qc|1, L), and is also the set's membership test. The slice read
    is [s0, s0 + L) with L = min(length, K) and s0 = clamp(start, 0, K − L), which covers every
    kept position when those lie in [max(start, 0), start + length) ∩ [0, K).
    """
    run = int_min(length, num_keys)
    if isinstance(start, torch.Tensor):  # a static buffer's query position, on the device
        s0 = start.clamp(0, num_keys - run)
    else:
        s0 = int_max(0, int_min(start, num_keys - run))
    pos = s0 + torch.arange(run, device=device).view(1, 1, 1, -1)
    part = Part(pos, member(pos), (s0, run), interval, source=name)
    return IndexSet(
        [part], member, True, frozenset([name]), intervals=None if interval is None else (interval,)
    )


def expand_heads(mask: torch.Tensor, heads: int) -> torch.Tensor:
    """(b, h, …) with h ∈ {1, Hkv, heads} -> broadcastable to (b, heads, …): a KV head's rows
    repeated for each query head of its group where a shared selection (h = Hkv) meets
    per-query-head tensors."""
    h = mask.shape[1]
    if h in (1, heads):
        return mask
    return mask.repeat_interleave(heads // h, dim=1)


def bitmap_contains(idx: torch.Tensor, valid: torch.Tensor, num_keys) -> Callable:
    """Membership through a (b, h, Qc, K) bool bitmap of the valid positions of ``idx``.
    Invalid entries (which may repeat a valid position, as padding often holds 0) write to a
    spare column: only True is ever written, so repeated positions cannot undo a member."""
    cache: list[torch.Tensor] = []

    def contains(j: torch.Tensor) -> torch.Tensor:
        if not cache:
            lead = torch.broadcast_shapes(idx.shape[:3], valid.shape[:3])
            bitmap = torch.zeros(*lead, num_keys + 1, dtype=torch.bool, device=idx.device)
            ix = idx.expand(*lead, idx.shape[-1])
            ix = torch.where(valid.expand(ix.shape), ix, num_keys)
            cache.append(bitmap.scatter(-1, ix, True)[..., :num_keys])
        bitmap = cache[0]
        lead = torch.broadcast_shapes(bitmap.shape[:3], j.shape[:3])
        return torch.gather(bitmap.expand(*lead, num_keys), -1, j.expand(*lead, j.shape[-1]))

    return contains


def selection_set(
    name: str,
    idx: torch.Tensor,
    valid: torch.Tensor,
    num_keys,
    excludes: frozenset[str],
    listed: Listed | None = None,
) -> IndexSet:
    """A data-dependent selection (top-k): idx/valid (b, h, Qc, n); ``listed``: the same in the
    fused kernel's terms."""
    return IndexSet(
        [Part(idx, valid, listed=listed)],
        bitmap_contains(idx, valid, num_keys),
        False,
        frozenset([name]),
        excludes,
    )


def union(name: str, sets: list[IndexSet]) -> IndexSet:
    """Keys kept by any set, each once: a later set's entries that an earlier set holds are
    marked invalid.

    Sets with arithmetic membership go first, so a selection is checked against ranges, never
    the other way round; a set known to exclude an earlier one skips the check. Every key of an
    earlier set's full membership is held, valid, by that set or one before it, so dropping it
    from later sets never loses a key.
    """
    ordered = sorted(sets, key=lambda s: not s.cheap)
    parts: list[Part] = []
    for i, current in enumerate(ordered):
        earlier = [prev for prev in ordered[:i] if not prev.leaves <= current.excludes]
        # the fused kernel makes the same check itself against earlier runs
        by_runs = all(prev.intervals is not None for prev in earlier)
        for part in current.parts:
            valid = part.valid
            for prev in earlier:
                valid = valid & ~prev.contains(part.idx)
            checked = part.with_valid(valid)
            kept = replace(checked, run=part.run, listed=part.listed, source=part.source)
            parts.append(kept if by_runs else checked)

    def contains(j: torch.Tensor) -> torch.Tensor:
        out = ordered[0].contains(j)
        for s in ordered[1:]:
            out = out | s.contains(j)
        return out

    leaves = frozenset().union(*(s.leaves for s in ordered))
    excludes = frozenset.intersection(*(s.excludes for s in ordered))
    cheap = all(s.cheap for s in ordered)
    runs = None
    if all(s.intervals is not None for s in ordered):
        runs = tuple(run for s in ordered for run in s.intervals)
    return IndexSet(parts, contains, cheap, leaves | frozenset([name]), excludes, runs)


def intersection(name: str, a: IndexSet, b: IndexSet) -> IndexSet:
    """Keys of ``a`` that ``b`` also keeps (a's parts, filtered)."""
    return IndexSet(
        [p.with_valid(p.valid & b.contains(p.idx)) for p in a.parts],
        lambda j: a.contains(j) & b.contains(j),
        a.cheap and b.cheap,
        frozenset([name]),
        a.excludes | b.excludes,
    )


def difference(name: str, a: IndexSet, b: IndexSet) -> IndexSet:
    """Keys of ``a`` that ``b`` does not keep."""
    return IndexSet(
        [p.with_valid(p.valid & ~b.contains(p.idx)) for p in a.parts],
        lambda j: a.contains(j) & ~b.contains(j),
        a.cheap and b.cheap,
        frozenset([name]),
        a.excludes,
    )
