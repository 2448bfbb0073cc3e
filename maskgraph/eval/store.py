"""The store of one sweep: its folder, the SQLite table of all rows, the combined metrics.

Layout of ``OUT`` (``maskgraph sweep SWEEP.yaml --out OUT``):

- ``sweep.json``: the checked sweep (models, variants, settings) and its trials (ids, shards);
- ``sweep.yaml``: the sweep file as given;
- ``trials/<id>/``: one ``maskgraph eval`` run folder per trial (``rows.jsonl`` … see
  :mod:`maskgraph.eval.rundir`), plus ``error.txt`` (the traceback) while the trial has failed;
- ``results.sqlite``: tables ``trials`` (id, model, task, length, first/stop sample, status,
  error, traceback, seconds), ``rows`` (every newest row of every trial, with its model and
  trial) and ``cells`` (per model and cell, the aggregates of ``metrics.json``);
- ``metrics.json``: the cells of every model, in the format of a run's ``metrics.json`` with a
  ``model`` key, so that ``maskgraph report OUT`` reads a sweep as it reads a run.

Only the parent process writes ``results.sqlite`` and ``metrics.json``; workers write their
trial folders only.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from ..errors import RunFolderError
from ..outputs import writable_folder
from .rundir import MICRO, ROWS, RunDir, metrics_text
from .runner import CSV_FIELDS, PPL, aggregate_cells
from .sweepfile import SweepSpec, Trial
from .trials import TRIALS, TrialResult, trial_folder

SWEEP_JSON = "sweep.json"
SWEEP_YAML = "sweep.yaml"
DATABASE = "results.sqlite"
METRICS = "metrics.json"

TRIAL_COLUMNS = (
    "id TEXT PRIMARY KEY, model TEXT, task TEXT, length INTEGER, first_sample INTEGER, "
    "stop_sample INTEGER, status TEXT, error TEXT, traceback TEXT, seconds REAL, updated REAL"
)
ROW_COLUMNS = ("model", "trial", *CSV_FIELDS, "graph_sha", "calls")
CELL_COLUMNS = (
    "model", "cell", "graph", "label", "target", "task", "kind", "length", "status", "samples",
    "score", "score_low", "score_high", "ref_score", "agreement", "ppl", "ref_ppl", "density", "rel_err", "recall",
    "overrides",
)  # fmt: skip


class SweepStore:
    """The folder of a sweep, opened for a run (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(cls, out: str | Path, spec: SweepSpec, text: str) -> SweepStore:
        """Open (creating) ``out`` for ``spec``; refuses a folder that is not empty and holds no
        sweep. A sweep folder may be resumed with an edited sweep file: trials are found by id."""
        root = writable_folder(out, what="--out")
        root.mkdir(parents=True, exist_ok=True)
        if not (root / SWEEP_JSON).is_file():
            others = sorted(p.name for p in root.iterdir())
            if others:
                listed = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
                raise RunFolderError(
                    f"--out {root}: not empty ({listed}) and not a maskgraph sweep (no {SWEEP_JSON}); "
                    "give a new or empty folder"
                )
        store = cls(root)
        trials = [_trial_record(t) for t in spec.trials()]
        data = {"sweep": spec.to_json(), "trials": trials}
        (root / SWEEP_JSON).write_text(json.dumps(data, indent=2), encoding="utf-8")
        (root / SWEEP_YAML).write_text(text, encoding="utf-8")
        (root / TRIALS).mkdir(exist_ok=True)
        with closing(store.connect()) as db, db:
            db.execute(f"CREATE TABLE IF NOT EXISTS trials ({TRIAL_COLUMNS})")
        return store

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.root / DATABASE)

    def failed(self) -> dict[str, str]:
        """Trial id -> error line of every trial whose last end was a failure."""
        with closing(self.connect()) as db:
            return dict(db.execute("SELECT id, error FROM trials WHERE status = 'failed'"))

    def record(self, trial: Trial, result: TrialResult) -> None:
        """Write how ``trial`` ended (replacing an earlier record of it)."""
        with closing(self.connect()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO trials VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    trial.id, trial.model, trial.task, trial.length, trial.start, trial.stop,
                    result.status, result.error, result.traceback, result.seconds, time.time(),
                ),
            )  # fmt: skip

    def finalise(self, trials: list[Trial]) -> dict[str, Any]:
        """Rebuild the ``rows`` and ``cells`` tables and ``metrics.json`` from the folders of
        ``trials``; returns the metrics (cells keyed ``model:cell``)."""
        rows: list[dict[str, Any]] = []
        cells: dict[str, dict[str, Any]] = {}
        for model in dict.fromkeys(t.model for t in trials):
            mine_rows, mine_micro = [], []
            for t in trials:
                folder = trial_folder(self.root, t)
                if t.model != model or not (folder / "config.json").is_file():
                    continue
                rd = RunDir(folder, ppl_task=PPL)
                got = rd.read_log(ROWS)
                mine_rows += got
                mine_micro += rd.read_log(MICRO)
                rows += [{**r, "model": model, "trial": t.id} for r in got]
            for cid, cell in aggregate_cells(mine_rows, mine_micro).items():
                cells[f"{model}:{cid}"] = {**cell, "model": model}
        newest = {(r["model"], r["cell"], r["index"]): r for r in rows}
        with closing(self.connect()) as db, db:
            _replace_table(db, "rows", ROW_COLUMNS, list(newest.values()))
            _replace_table(
                db, "cells", CELL_COLUMNS, [{**c, "cell": k.split(":", 1)[1]} for k, c in cells.items()]
            )
        metrics = {"cells": cells}
        (self.root / METRICS).write_text(metrics_text(metrics), encoding="utf-8")
        return metrics


def _trial_record(t: Trial) -> dict[str, Any]:
    return {
        "id": t.id,
        "model": t.model,
        "task": t.task,
        "length": t.length,
        "start": t.start,
        "stop": t.stop,
    }


def _replace_table(db: sqlite3.Connection, name: str, columns: tuple[str, ...], records: list[dict]) -> None:
    db.execute(f"DROP TABLE IF EXISTS {name}")
    quoted = ", ".join(f'"{c}"' for c in columns)
    db.execute(f"CREATE TABLE {name} ({quoted})")
    marks = ", ".join("?" for _ in columns)
    db.executemany(
        f"INSERT INTO {name} VALUES ({marks})",
        [tuple(_sql_value(r.get(c)) for c in columns) for r in records],
    )


def _sql_value(v: Any) -> Any:
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return v
