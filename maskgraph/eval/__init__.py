"""Evaluation: how much quality each graph keeps (see ``maskgraph eval`` / ``maskgraph report``).

- :mod:`.tasks`: RULER-style synthetic tasks; :mod:`.scoring`: RULER's string-match rules;
- :mod:`.bench`: the standard benchmarks (LongBench v1/v2, RULER, InfiniteBench, LooGLE,
  ZeroSCROLLS) as tasks read from a local copy, with their templates, truncation and metrics;
- :mod:`.text`: long natural text for perplexity; :mod:`.protocol`: prefill/question/decode;
- :mod:`.metrics`: per-layer, per-head micro metrics (an injection observer);
- :mod:`.sweep`: parameters aiming at target densities;
- :mod:`.runner`: resumable run directories; :mod:`.report`: leaderboard and plots;
- ``maskgraph sweep``: :mod:`.sweepfile` (the checked sweep file, variants, trials),
  :mod:`.trials` (one trial in a worker), :mod:`.sweeprun` (backends, progress),
  :mod:`.store` (the sweep's folder and SQLite table).
"""

from __future__ import annotations

from .metrics import MicroObserver, call_metrics, summarise
from .runner import EvalConfig, run_eval
from .scoring import string_match_all, string_match_part
from .sweep import sweep_overrides
from .tasks import TASKS, Sample, generate

__all__ = [
    "TASKS",
    "EvalConfig",
    "MicroObserver",
    "Sample",
    "call_metrics",
    "generate",
    "run_eval",
    "string_match_all",
    "string_match_part",
    "summarise",
    "sweep_overrides",
]
