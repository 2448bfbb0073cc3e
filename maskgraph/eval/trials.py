"""Running one sweep trial where a worker sits (this process, a pool process, a Ray actor).

A trial's results go to its own ``maskgraph eval`` run folder, ``OUT/trials/<id>/`` (see
:mod:`maskgraph.eval.rundir`): rows are appended per finished (cell, sample), so an interrupted
trial loses at most the sample in flight and a rerun skips every finished pair. A worker keeps
its model loaded from trial to trial (:class:`ModelCache`).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MaskgraphError
from ..loader import load_graph
from .runner import EvalConfig, Variant, finished_pairs, open_run, plan, run_planned
from .sweepfile import Trial, VariantSpec

TRIALS = "trials"
ERROR_FILE = "error.txt"


@dataclass(frozen=True)
class TrialResult:
    """How a trial ended: ``done`` or ``failed`` (with the exception's line and traceback)."""

    id: str
    status: str
    seconds: float
    error: str | None = None
    traceback: str | None = None


def trial_folder(root: str | Path, trial: Trial) -> Path:
    return Path(root) / TRIALS / trial.id


def build_variant(spec: VariantSpec) -> Variant:
    """The runner's :class:`Variant` of ``spec`` (a setting whose overrides do not apply is
    kept with its error, as ``maskgraph eval`` keeps it: its rows say so)."""
    base = load_graph(spec.yaml)
    try:
        graph, error = (base.with_overrides(spec.overrides) if spec.overrides else base), None
    except MaskgraphError as exc:
        graph, error = None, f"error: {exc}"
    return Variant(spec.label, spec.graph, spec.target, graph, dict(spec.overrides), error)


def _planned(trial: Trial) -> tuple[EvalConfig, dict[int, list[Variant]], dict[str, str]]:
    config = trial.eval_config()
    by_length = {trial.length: [build_variant(v) for v in trial.variants]}
    graph_yaml = {v.graph: v.yaml for v in trial.variants}
    return config, by_length, graph_yaml


def pairs_left(root: str | Path, trial: Trial, retry_errors: bool) -> int:
    """(cell, sample) pairs of ``trial`` not finished yet; opens (creating or checking) its run
    folder, so a resume with other settings is refused before any work starts."""
    config, by_length, graph_yaml = _planned(trial)
    rd = open_run(config, trial_folder(root, trial), by_length, graph_yaml)
    jobs = plan(config, by_length, finished_pairs(rd, retry_errors), trial.start)
    return sum(len(j.todo) for j in jobs)


class ModelCache:
    """The model a worker holds: loaded on first use, kept while trials ask for the same one."""

    def __init__(self) -> None:
        self.key: tuple[str, str] | None = None
        self.value: tuple[Any, Any] | None = None

    def load(self, config: EvalConfig) -> tuple[Any, Any]:
        key = (config.model, config.device)
        if self.key != key:
            self.value = None  # free the old model before loading the next
            self.value = load_model(config.model, config.device)
            self.key = key
        assert self.value is not None
        return self.value


def load_model(name: str, device: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a sweep's model name (see :mod:`maskgraph.eval.sweepfile`):
    shipped, ``tiny-<arch>`` (seed 0, a byte tokenizer) or a saved HuggingFace folder."""
    from ..calibrate.models import load

    model, tokenizer = load(name)
    return model.to(device).eval(), tokenizer


def run_trial(root: str | Path, trial: Trial, cache: ModelCache, retry_errors: bool = False) -> TrialResult:
    """Run (or resume) ``trial`` into its folder under ``root``. Any exception ends the trial as
    ``failed`` with its traceback (also written to the folder's ``error.txt``); an interrupt
    (KeyboardInterrupt) is not caught."""
    start = time.monotonic()
    folder = trial_folder(root, trial)
    try:
        config, by_length, graph_yaml = _planned(trial)
        run_planned(
            config,
            folder,
            by_length,
            graph_yaml,
            load=cache.load,
            first_sample=trial.start,
            progress=False,
            retry_errors=retry_errors,
        )
    except Exception as exc:  # noqa: BLE001 - a failed trial is recorded with its traceback, never hidden
        text = traceback.format_exc()
        if folder.is_dir():
            (folder / ERROR_FILE).write_text(text, encoding="utf-8")
        line = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return TrialResult(trial.id, "failed", round(time.monotonic() - start, 3), line, text)
    (folder / ERROR_FILE).unlink(missing_ok=True)
    return TrialResult(trial.id, "done", round(time.monotonic() - start, 3))
