"""Memoised loading of calibration files: reloaded only when the file changes."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_CACHE: dict[Callable, tuple[tuple, object]] = {}


def cached_load(loader: Callable[[str], T], path: str) -> T:
    """``loader(path)``, memoised per loader on (absolute path, modification time, size).

    One file per loader is kept; a missing file goes straight to ``loader`` so that its own
    error (which names the command that makes the file) is raised.
    """
    try:
        st = os.stat(path)
    except OSError:
        return loader(path)
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    hit = _CACHE.get(loader)
    if hit is None or hit[0] != key:
        hit = (key, loader(path))
        _CACHE[loader] = hit
    return hit[1]  # type: ignore[return-value]
