"""Sparse execution: touch only the selected keys.

``mg.compile(graph, mode="sparse", gqa="per_head" | "shared")`` turns every mask of the graph
into an index set (:mod:`maskgraph.lowering.indexset`) of static size (sink + window + k for the usual graphs);
attention reads the contiguous parts (sink, window) as slices of the cache, gathers the
selected keys and values, and runs one softmax over all of them (:mod:`.gather`); on CUDA,
decode chunks go through one fused Triton kernel that reads the listed keys in place
(:mod:`.fused`). A prompt of a graph that selects by position only runs as one FlexAttention
call with a block mask from the operators' position rules (:mod:`.flex`). Estimators score keys
from their prepare caches (``sparse_scores``), never by reading all full-precision keys, except
the ``exact`` oracle. Graphs whose masks are not index sets (samplers, top-p) raise
:class:`~maskgraph.errors.NotSupportedError` at compile time, naming the node and the reason.
"""

from __future__ import annotations

from ..errors import NotSupportedError
from .plan import build_plan
from .runner import GQA_MODES, SparseRunner

OPTIONS = ("gqa", "kernel", "topk", "prefill")


def make_sparse(compiled, **options) -> SparseRunner:
    """The sparse runner for ``compiled`` (a CompiledAttention), or NotSupportedError with the reason.

    Options: ``gqa="per_head"`` (default: each query head selects its own keys, the same
    output as simulate mode) or ``"shared"`` (the query heads of a KV group share one selection
    made from the max of their scores; each gathered key serves the whole group).
    ``kernel="auto"`` (default: the fused Triton kernel of :mod:`.fused` for chunks of at most
    16 queries on CUDA when Triton is installed, torch otherwise), ``"triton"`` (always; on the
    CPU only under Triton's interpreter, ``TRITON_INTERPRET=1``) or ``"torch"`` (never).
    ``topk="auto"`` (default: on the kernel path, top-k by the Triton selection of :mod:`maskgraph.lowering.topk`
    in six launches; torch elsewhere), ``"triton"`` (the same) or ``"torch"`` (always torch).
    Both take the same set as simulate mode: ties with the k-th largest score go to the
    lowest indices. ``prefill="auto"`` (default: a graph that selects by position only runs a
    prompt as one compiled FlexAttention call under the inductor backend on CUDA, chunks of
    queries elsewhere), ``"flex"`` (FlexAttention for a position-only graph on any backend and
    device: its eager reference where it cannot compile, which keeps the semantics and computes
    every score) or ``"chunked"`` (never FlexAttention); ``attn.prefill`` says which and why.
    """
    options = {**getattr(compiled, "sparse_options", {}), **options}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise NotSupportedError(f"unknown sparse option(s) {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")
    return SparseRunner(
        compiled,
        gqa=options.get("gqa", "per_head"),
        chunk_size=compiled.chunk_size,
        kernel=options.get("kernel", "auto"),
        topk=options.get("topk", "auto"),
        prefill=options.get("prefill", "auto"),
    )


__all__ = ["GQA_MODES", "NotSupportedError", "SparseRunner", "build_plan", "make_sparse"]
