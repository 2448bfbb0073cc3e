"""Sparse execution: touch only the selected keys.

``mg.compile(graph, mode="sparse", gqa="per_head" | "shared")`` turns every mask of the graph
into an index set (:mod:`.indexset`) of static size (sink + window + k for the usual graphs);
attention reads the contiguous parts (sink, window) as slices of the cache, gathers the
selected keys and values, and runs one softmax over all of them (:mod:`.gather`). Estimators score keys
from their prepare caches (``sparse_scores``), never by reading all full-precision keys, except
the ``exact`` oracle. Graphs whose masks are not index sets (samplers, top-p) raise
:class:`~maskgraph.errors.NotSupportedError` at compile time, naming the node and the reason.
"""

from __future__ import annotations

from ..errors import NotSupportedError
from .plan import build_plan
from .runner import GQA_MODES, SparseRunner

OPTIONS = ("gqa",)


def make_sparse(compiled, **options) -> SparseRunner:
    """The sparse runner for ``compiled`` (a CompiledAttention), or NotSupportedError with the reason.

    Options: ``gqa="per_head"`` (default: each query head selects its own keys, the same
    output as simulate mode) or ``"shared"`` (the query heads of a KV group share one selection
    made from the max of their scores; each gathered key serves the whole group).
    """
    options = {**getattr(compiled, "sparse_options", {}), **options}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise NotSupportedError(f"unknown sparse option(s) {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")
    return SparseRunner(compiled, gqa=options.get("gqa", "per_head"), chunk_size=compiled.chunk_size)


__all__ = ["GQA_MODES", "NotSupportedError", "SparseRunner", "build_plan", "make_sparse"]
