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

import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

#: Rewrite a static buffer's cache rows through ``torch.compile`` on CUDA (one compile per
#: encoder and shape): eagerly, HashAttention's signature update was about 25 kernel launches
#: per layer and step, each a node of a recorded decode step.
#: "cuda": compiled on CUDA, eager on the CPU; "always" (tests, to compare) or "never".
COMPILE_UPDATES = "cuda"


@dataclass(frozen=True)
class StaticKeys:
    """``num_keys`` 0-d int64 tensor: tokens in the buffer (on the keys' device); ``new``: how
    many of them arrived with this call (its query count)."""

    num_keys: torch.Tensor
    new: int


def pin_addresses(slot: dict) -> None:
    """Mark every tensor of an estimator's ``slot`` built over a static buffer as a static
    address for ``torch.compile``: the decode steps rewrite these tensors in place, and CUDA
    graphs (transformers' ``"reduce-overhead"`` compile of a static-cache ``generate``) record
    steps that mutate a graph input only when its address never changes. Dynamo guards on the
    tensor's identity, so a cache rebuilt at another address compiles again rather than replaying
    stale pointers. Called outside tracing only (a slot built while tracing is left as it is)."""
    if torch.compiler.is_compiling():
        return
    for value in slot.values():
        tensors = value.values() if isinstance(value, dict) else [value]  # e.g. a weights dict
        for t in tensors:
            if isinstance(t, torch.Tensor) and not hasattr(t, "_dynamo_static_input_type"):
                torch._dynamo.mark_static_address(t)


def row_caches(
    slot: dict,
    names: Sequence[str],
    keys: torch.Tensor,
    values: torch.Tensor,
    encode: Callable[..., tuple[torch.Tensor, ...]],
    stale: bool,
    static: StaticKeys | None,
    args: tuple[Any, ...] = (),
    compiled: bool = True,
) -> tuple[torch.Tensor, ...]:
    """Per-key caches (B, H, K, …) — ``encode(keys, values, *args)`` of every key row, one
    tensor per name — kept in ``slot`` under ``names``. ``encode`` is a module-level function
    (the compiled static update guards on it; a closure made per call would recompile).
    ``compiled=False``: a static buffer's rows are always rewritten eagerly (an encoder whose
    rows inductor would round differently from torch, e.g. a norm: its reduction order differs).

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
        new = encode(keys[:, :, start:], values[:, :, start:], *args)
        out = tuple(new) if fresh else tuple(torch.cat([c, x], dim=2) for c, x in zip(cached, new))
        slot.update(zip(names, out))
        slot.update(n=k, static=None, updated=(start, k))
        return out
    fresh = stale or cached[0] is None or slot.get("static") != k
    if fresh:
        out = tuple(encode(keys, values, *args))
    else:
        rewrite_rows(tuple(cached), keys, values, static, encode, args, compiled)
        out = tuple(cached)
    slot.update(zip(names, out))
    slot.update(n=None, static=k, updated=None)
    return out


def rewrite_rows(
    cached: tuple[torch.Tensor, ...],
    keys: torch.Tensor,
    values: torch.Tensor,
    static: StaticKeys,
    encode: Callable[..., tuple[torch.Tensor, ...]],
    args: tuple[Any, ...] = (),
    compiled: bool = True,
) -> None:
    """Rewrite in place the caches' rows of the call's new keys (:func:`update_rows`), through
    ``torch.compile`` on CUDA (``COMPILE_UPDATES``) unless ``compiled`` is False."""
    compile_it = compiled and (COMPILE_UPDATES == "always" or (COMPILE_UPDATES == "cuda" and keys.is_cuda))
    update = compiled_update(encode) if compile_it else update_rows
    update(cached, keys, values, static.num_keys, static.new, encode, args)


def update_rows(
    cached: tuple[torch.Tensor, ...],
    keys: torch.Tensor,
    values: torch.Tensor,
    num_keys: torch.Tensor,
    new: int,
    encode: Callable[..., tuple[torch.Tensor, ...]],
    args: tuple[Any, ...],
) -> None:
    """Re-encode rows num_keys − new … num_keys − 1 of keys/values (B, H, Kmax, D) and write
    them in place into the caches (B, H, Kmax, …)."""
    pos = num_keys - new + torch.arange(new, device=num_keys.device)
    fresh = encode(keys.index_select(2, pos), values.index_select(2, pos), *args)
    for c, x in zip(cached, fresh):
        c.index_copy_(2, pos, x.to(c.dtype))


#: encoder -> :func:`update_rows` compiled for it.
_COMPILED_UPDATES: dict[Callable, Callable] = {}

#: Compiled variants kept per entry function (dynamo's default is 8; each dtype, new-row
#: count and shape of one encoder is one).
RECOMPILE_LIMIT = 32


def raise_recompile_limit(limit: int = RECOMPILE_LIMIT) -> None:
    """Let dynamo keep at least ``limit`` compiled variants per entry function."""
    config = torch._dynamo.config
    if getattr(config, "recompile_limit", limit) < limit:
        config.recompile_limit = limit


def compiled_update(encode: Callable) -> Callable:
    """:func:`update_rows` through ``torch.compile`` for one encoder (inductor fuses its
    pointwise steps and the row writes), made once per process. Each encoder gets its own
    entry function (a fresh code object), so that dynamo's per-code recompile limit counts
    that encoder's variants alone."""
    if encode not in _COMPILED_UPDATES:
        raise_recompile_limit()
        code = update_rows.__code__.replace(co_name=f"update_rows_{encode.__name__}")
        entry = types.FunctionType(code, update_rows.__globals__, code.co_name)
        _COMPILED_UPDATES[encode] = torch.compile(entry, fullgraph=True)
    return _COMPILED_UPDATES[encode]


def static_mask(static: StaticKeys, num_keys: int) -> torch.Tensor:
    """Bool (1, 1, 1, K): True on the keys that hold tokens (j < ``static.num_keys``)."""
    j = torch.arange(num_keys, device=static.num_keys.device)
    return (j < static.num_keys).view(1, 1, 1, num_keys)


def counting() -> bool:
    """Whether calls add their empty rows to ``empty_rows``: not while an outer
    ``torch.compile`` traces the call (transformers' compiled ``generate``), where a tensor
    kept from one call to the next would be overwritten by the next CUDA-graph replay."""
    return not torch.compiler.is_compiling()
