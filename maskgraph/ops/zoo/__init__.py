"""Method operators (the zoo): one module per method; each registers its operators on import."""

from __future__ import annotations

import importlib

MODULES = (
    "quest",
    "pq",
    "hashattention",
    "double_sparsity",
    "socket",
    "partial",
    "sampling",
    "magicpig",
    "vattention",
    "eviction",
)

for _name in MODULES:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _exc:  # a method not written yet
        if _exc.name != f"{__name__}.{_name}":
            raise
