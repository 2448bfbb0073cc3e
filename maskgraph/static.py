"""Static key buffers: a preallocated cache whose first ``num_keys`` positions hold tokens.

transformers' static caches hand attention their whole buffer (B, Hkv, Kmax, D) every step; a
CUDA graph replays one recorded step for every position. Neither may depend on a token count
read on the host, so in sparse mode ``attn(..., num_keys=n)`` takes that count as a 0-d int64
tensor on the device: the keys at positions ≥ n are padding and never attended, the call's Q
queries sit at positions n − Q … n − 1, and every shape depends on Kmax only.

Operators with key-side caches (Quest's page bounds, hash signatures, label codes) declare
``static_buffers=True`` and take a :class:`StaticKeys` in ``prepare(..., static=...)``: the
first call builds the cache for the whole buffer, each later call rewrites, in place, only the
rows of the keys that arrived with it (tensor positions: nothing read on the host).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StaticKeys:
    """``num_keys`` 0-d int64 tensor: tokens in the buffer (on the keys' device); ``new``: how
    many of them arrived with this call (its query count)."""

    num_keys: torch.Tensor
    new: int

    def new_positions(self) -> torch.Tensor:
        """(new,) int64 positions of the newest keys, num_keys − new … num_keys − 1."""
        return self.num_keys - self.new + torch.arange(self.new, device=self.num_keys.device)


def row_caches(
    slot: dict,
    names: Sequence[str],
    keys: torch.Tensor,
    values: torch.Tensor,
    encode: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]],
    stale: bool,
    static: StaticKeys | None,
) -> tuple[torch.Tensor, ...]:
    """Per-key caches (B, H, K, …) — ``encode(keys, values)`` of every key row, one tensor per
    name — kept in ``slot`` under ``names``.

    Growing keys (``static`` None): the rows from ``slot["n"]`` on are encoded and appended.
    A static buffer: the first call encodes the whole buffer (padding rows too: they are never
    attended), later calls re-encode the newest ``static.new`` rows in place. ``stale``: the
    caller's reason to start over (shape, device or parameters changed).
    """
    k = keys.shape[2]
    cached = [slot.get(name) for name in names]
    if static is None:
        n = slot.get("n") or 0
        fresh = stale or cached[0] is None or k < n or slot.get("static") is not None
        start = 0 if fresh else n
        new = encode(keys[:, :, start:], values[:, :, start:])
        out = tuple(new) if fresh else tuple(torch.cat([c, x], dim=2) for c, x in zip(cached, new))
        slot.update(zip(names, out))
        slot.update(n=k, static=None, updated=(start, k))
        return out
    fresh = stale or cached[0] is None or slot.get("static") != k
    if fresh:
        out = tuple(encode(keys, values))
    else:
        pos = static.new_positions()
        new = encode(keys.index_select(2, pos), values.index_select(2, pos))
        for c, x in zip(cached, new):
            c.index_copy_(2, pos, x.to(c.dtype))
        out = tuple(cached)
    slot.update(zip(names, out))
    slot.update(n=None, static=k, updated=None)
    return out


def static_mask(static: StaticKeys, num_keys: int) -> torch.Tensor:
    """Bool (1, 1, 1, K): True on the keys that hold tokens (j < ``static.num_keys``)."""
    j = torch.arange(num_keys, device=static.num_keys.device)
    return (j < static.num_keys).view(1, 1, 1, num_keys)
