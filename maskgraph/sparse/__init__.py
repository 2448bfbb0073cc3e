"""Sparse execution: touch only the selected keys (built in the sparse-execution issue)."""

from __future__ import annotations

from ..errors import NotSupportedError


def make_sparse(compiled):
    """Return the sparse runner for ``compiled`` or raise NotSupportedError with the reason."""
    raise NotSupportedError(
        "mode='sparse' is not built yet; use mode='simulate' (same semantics over all keys)"
    )
