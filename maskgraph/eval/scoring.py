"""RULER's scoring rules: case-insensitive substring match of each reference in the prediction.

- ``string_match_all`` (needles, variable tracking, word extraction): the share of references
  found in the prediction;
- ``string_match_part`` (question answering): 1 if any reference is found, else 0.

Both return a value in [0, 1]; RULER reports 100× the mean over samples. The standard
benchmarks' metrics (F1, ROUGE-L, code similarity, …) are in :mod:`maskgraph.eval.bench.metrics`;
:func:`score` dispatches to them by name.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import MaskgraphError
from .bench.metrics import METRICS as BENCH_METRICS
from .bench.metrics import bench_score

METRICS = ("all", "part")


def string_match_all(prediction: str, references: Sequence[str]) -> float:
    """Share of ``references`` that occur (case-insensitively) in ``prediction``."""
    if not references:
        raise MaskgraphError("string_match_all needs at least one reference")
    text = prediction.lower()
    return sum(r.lower() in text for r in references) / len(references)


def string_match_part(prediction: str, references: Sequence[str]) -> float:
    """1.0 if any of ``references`` occurs (case-insensitively) in ``prediction``, else 0.0."""
    if not references:
        raise MaskgraphError("string_match_part needs at least one reference")
    text = prediction.lower()
    return float(any(r.lower() in text for r in references))


def score(prediction: str, references: Sequence[str], metric: str, classes: Sequence[str] = ()) -> float:
    """Score by the named rule: ``"all"``, ``"part"``, or a benchmark metric (with the sample's
    class names, for classification)."""
    if metric == "all":
        return string_match_all(prediction, references)
    if metric == "part":
        return string_match_part(prediction, references)
    if metric in BENCH_METRICS:
        return bench_score(prediction, references, metric, classes)
    raise MaskgraphError(f"unknown metric {metric!r}; valid: {', '.join([*METRICS, *BENCH_METRICS])}")
