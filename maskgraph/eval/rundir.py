"""The run folder of ``maskgraph eval``: its files, how they are read back, what a resume reuses.

Layout:

- ``config.json``: the full configuration (model, graphs with their YAML, tasks, lengths, …);
- ``rows.jsonl``: one line per finished (cell, sample), appended as they finish — the
  resume log: a rerun skips every (cell, sample) already there;
- ``reference.jsonl``: the plain dense model's answer tokens (or window NLL) per sample;
- ``micro.jsonl``: one line per attention call through a graph (density; with ``--metrics``
  also relative output error and recall), written just before its row;
- ``results.csv``: the rows as a table; ``metrics.json``: per-cell aggregates. Both are rebuilt
  from the logs at the end of every run, so a resumed run gives the same tables.

Reading back is strict: a folder that is not empty and has no ``config.json`` is not a run; a
``config.json`` or a log line that is not valid JSON, lacks a key or has a value of the wrong
type is a :class:`~maskgraph.errors.RunFolderError` naming the file (and line). One exception,
on purpose: a log whose **last** line has no line end was cut by an interrupted write; reading
skips that fragment and :meth:`RunDir.drop_cut_lines` removes it before the run appends, so its
sample simply runs again.

A resume must match the run: the settings in :data:`RUN_IDENTITY` (``-p`` overrides included)
and the YAML of every graph name must be the same, and every finished row of a cell that is
run again must carry the same resolved-graph fingerprint. A resume may add graphs, tasks,
lengths, densities and samples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GraphError, RunFolderError
from ..loader import parse_yaml
from ..outputs import writable_folder

CONFIG = "config.json"
ROWS = "rows.jsonl"
REFERENCE = "reference.jsonl"
MICRO = "micro.jsonl"
LOGS = (ROWS, REFERENCE, MICRO)

#: Settings of ``config.json`` that every resume must repeat exactly.
RUN_IDENTITY = (
    "model", "seed", "protocol", "template", "metrics", "ppl_score_share", "text_file", "device",
    "overrides", "data",
)  # fmt: skip

#: What to do, appended to every refusal.
ADVICE = "use a new --out, or resume with the settings the run was made with"


# ----- value checks -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """A JSON value type: its test and how a message names it."""

    test: Callable[[Any], bool]
    text: str


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _list_of(test: Callable[[Any], bool], text: str) -> Kind:
    return Kind(lambda v: isinstance(v, list) and all(test(x) for x in v), text)


INT = Kind(_is_int, "an integer")
NUM = Kind(_is_num, "a number")
STR = Kind(lambda v: isinstance(v, str), "a string")
BOOL = Kind(lambda v: isinstance(v, bool), "true or false")
OBJECT = Kind(lambda v: isinstance(v, dict), "an object")
OPT_NUM = Kind(lambda v: v is None or _is_num(v), "a number or null")
OPT_INT = Kind(lambda v: v is None or _is_int(v), "an integer or null")
OPT_STR = Kind(lambda v: v is None or isinstance(v, str), "a string or null")
STRS = _list_of(lambda x: isinstance(x, str), "a list of strings")
INTS = _list_of(_is_int, "a list of integers")
NUMS = _list_of(_is_num, "a list of numbers")
YAML_BY_PATH = Kind(
    lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
    "an object of graph YAML texts",
)

CONFIG_KEYS = {
    "model": STR, "graphs": STRS, "tasks": STRS, "lengths": INTS, "samples": INT, "seed": INT,
    "overrides": OBJECT, "densities": NUMS, "protocol": STR, "device": STR, "metrics": BOOL,
    "template": STR, "ppl_score_share": NUM, "text_file": OPT_STR, "graph_yaml": YAML_BY_PATH,
}  # fmt: skip
#: Settings that runs made before they existed lack (read as null).
CONFIG_OPTIONAL = {"data": OPT_STR}
ROW_KEYS = {
    "cell": STR, "graph": STR, "label": STR, "target": OPT_NUM, "task": STR, "kind": STR,
    "length": INT, "index": INT, "overrides": OBJECT, "status": STR,
}  # fmt: skip
ROW_OPTIONAL = {
    "graph_sha": OPT_STR,
    "calls": OPT_INT,
    "density": OPT_NUM,
    "rel_err": OPT_NUM,
    "recall": OPT_NUM,
}
ROW_OK_PPL = {"nll": NUM, "count": INT, "ref_nll": NUM, "score": NUM}
ROW_OK_TASK = {"score": NUM, "ref_score": NUM, "agreement": NUM}
REFERENCE_KEYS = {"task": STR, "length": INT, "index": INT}
REFERENCE_PPL = {"nll": NUM, "count": INT}
REFERENCE_TASK = {"tokens": INTS}
CELL_KEYS = {
    "graph": STR, "label": STR, "target": OPT_NUM, "task": STR, "kind": STR, "length": INT,
    "status": STR, "samples": INT,
}  # fmt: skip
CELL_OPTIONAL = {
    "density": OPT_NUM, "rel_err": OPT_NUM, "recall": OPT_NUM, "agreement": OPT_NUM, "score": OPT_NUM,
    "ref_score": OPT_NUM, "ppl": OPT_NUM, "ref_ppl": OPT_NUM, "per_layer": OBJECT, "per_head": OBJECT,
    "overrides": OBJECT, "agreements": NUMS, "score_low": OPT_NUM, "score_high": OPT_NUM, "model": STR, "scores": NUMS, "nlls": NUMS,
    "counts": INTS,
}  # fmt: skip
MICRO_KEYS = {"cell": STR, "index": INT, "layer": INT, "Q": INT, "K": INT, "density": NUMS}
MICRO_OPTIONAL = {"rel_err": NUMS, "recall": NUMS}


def short(value: Any, limit: int = 60) -> str:
    """``repr``-like text of ``value``, cut to ``limit`` characters for one-line messages."""
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def metrics_text(metrics: Any, depth: int = 0) -> str:
    """``metrics.json``'s text: JSON indented by two spaces, keys sorted, and each list of
    numbers (per-sample scores, per-head means) on one line."""
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(metrics, dict) and metrics:
        items = [
            f"{inner}{json.dumps(str(k))}: {metrics_text(v, depth + 1)}" for k, v in sorted(metrics.items())
        ]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(metrics, list) and metrics and not all(_is_number(v) for v in metrics):
        return "[\n" + ",\n".join(f"{inner}{metrics_text(v, depth + 1)}" for v in metrics) + f"\n{pad}]"
    return json.dumps(metrics)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_keys(record: Any, required: dict[str, Kind], optional: dict[str, Kind], where: str) -> None:
    """Raise :class:`RunFolderError` at ``where`` unless ``record`` is an object whose keys have
    the kinds given (``required`` must be present, ``optional`` may be)."""
    if not isinstance(record, dict):
        raise RunFolderError(f"{where}: expected a JSON object, got {short(record)}")
    for key in required:
        if key not in record:
            raise RunFolderError(f"{where}: missing key {key!r}")
    for key, kind in {**required, **optional}.items():
        if key in record and not kind.test(record[key]):
            raise RunFolderError(f"{where}: {key!r} must be {kind.text}, got {short(record[key])}")


def check_row(r: Any, where: str, ppl_task: str) -> None:
    """A ``rows.jsonl`` record: the common keys, and the scores of a finished (``ok``) sample."""
    check_keys(r, ROW_KEYS, ROW_OPTIONAL, where)
    if r["status"] == "ok":
        check_keys(r, ROW_OK_PPL if r["task"] == ppl_task else ROW_OK_TASK, {}, where)
    expected = f"{r['label']}/{r['task']}/{r['length']}"
    if r["cell"] != expected:
        raise RunFolderError(f"{where}: cell {r['cell']!r} does not match its label, task and length")


def check_reference(r: Any, where: str, ppl_task: str) -> None:
    check_keys(r, REFERENCE_KEYS, {}, where)
    check_keys(r, REFERENCE_PPL if r["task"] == ppl_task else REFERENCE_TASK, {}, where)


def check_micro(r: Any, where: str, ppl_task: str) -> None:
    check_keys(r, MICRO_KEYS, MICRO_OPTIONAL, where)


CHECKS = {ROWS: check_row, REFERENCE: check_reference, MICRO: check_micro}


# ----- the folder ---------------------------------------------------------------------------------
class RunDir:
    """A run folder, opened for reading and appending (see the module docstring)."""

    def __init__(self, root: Path, ppl_task: str) -> None:
        self.root = root
        self.ppl_task = ppl_task

    @classmethod
    def open(cls, root: str | Path, ppl_task: str) -> RunDir:
        """Open (creating it if needed) the run folder ``root``; ``ppl_task`` names the perplexity
        task, whose rows hold NLLs instead of scores.

        Refuses a path that cannot be written and a non-empty folder without ``config.json``.
        """
        folder = writable_folder(root, what="--out")
        folder.mkdir(parents=True, exist_ok=True)
        rd = cls(folder, ppl_task)
        if not rd.path(CONFIG).is_file():
            others = sorted(p.name for p in folder.iterdir())
            if others:
                listed = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
                raise RunFolderError(
                    f"--out {folder}: not empty ({listed}) and not a maskgraph run (no {CONFIG}); "
                    "give a new or empty folder"
                )
        return rd

    def path(self, name: str) -> Path:
        return self.root / name

    def read_config(self) -> dict[str, Any] | None:
        """The checked ``config.json``, or None in a new run."""
        p = self.path(CONFIG)
        if not p.is_file():
            return None
        data = _parse(_read_text(p), str(p))
        check_keys(data, CONFIG_KEYS, CONFIG_OPTIONAL, str(p))
        return data

    def read_log(self, name: str) -> list[dict[str, Any]]:
        """Every record of log ``name`` (checked line by line; a missing log is empty)."""
        p = self.path(name)
        if not p.is_file():
            return []
        check = CHECKS[name]
        lines = _read_text(p).split("\n")
        tail = lines.pop()  # "" when the log ends with a line end; else a possibly cut line
        if tail.strip() and _whole_object(tail):
            lines.append(tail)
        out = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{p}:{number}"
            record = _parse(line, where)
            check(record, where, self.ppl_task)
            out.append(record)
        return out

    def drop_cut_lines(self) -> None:
        """Remove from each log a last line cut by an interrupted write (see
        :func:`drop_cut_line`), so that the next append starts a line of its own."""
        for name in LOGS:
            drop_cut_line(self.path(name))

    def append(self, name: str, records: Iterable[dict[str, Any]]) -> None:
        with open(self.path(name), "a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")

    def write_config(self, data: dict[str, Any]) -> None:
        self.path(CONFIG).write_text(json.dumps(data, indent=2), encoding="utf-8")


def read_metrics(path: Path) -> dict[str, dict[str, Any]]:
    """The cells of a run's ``metrics.json`` (cell id -> aggregates), each checked for the
    keys a report reads."""
    data = _parse(_read_text(path), str(path))
    check_keys(data, {"cells": OBJECT}, {}, str(path))
    for cid, cell in data["cells"].items():
        check_keys(cell, CELL_KEYS, CELL_OPTIONAL, f"{path}: cell {short(cid)}")
    return data["cells"]


def drop_cut_line(path: Path) -> None:
    """If the log at ``path`` ends in a line without a line end, remove that line (an
    interrupted write cut it) — unless it is a whole JSON object, which gets its line end."""
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        start = data.rfind(b"\n") + 1
        if _whole_object(data[start:]):
            f.write(b"\n")
        else:
            f.truncate(start)


def _whole_object(text: str | bytes) -> bool:
    """Whether a last line without a line end is a whole JSON object (not cut short)."""
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RunFolderError(f"{path}: not UTF-8 text (byte {exc.start}); {ADVICE}") from None


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno} column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
        raise RunFolderError(f"{where}: not valid JSON ({exc.msg} at {at})") from None


# ----- what a resume may reuse -----------------------------------------------------------------
def check_same_run(root: Path, old: dict[str, Any], new: dict[str, Any], graph_yaml: dict[str, str]) -> None:
    """Refuse to resume the run whose ``config.json`` is ``old`` with the settings ``new``
    (both plain JSON data) unless every setting of :data:`RUN_IDENTITY` is equal and every graph
    name in ``graph_yaml`` (path -> YAML of this call) has the YAML the run used."""
    diffs = [
        f"{key} {short(old.get(key))} in the run, {short(new.get(key))} now"
        for key in RUN_IDENTITY
        if old.get(key) != new.get(key)
    ]
    used = {_graph_name(text): (path, text) for path, text in old["graph_yaml"].items()}
    for path, text in graph_yaml.items():
        name = _graph_name(text)
        if name is not None and name in used and used[name][1] != text:
            diffs.append(
                f"graph {name!r} ({path}) is not the {name!r} the run used ({used[name][0]}, kept in {CONFIG})"
            )
    if diffs:
        raise RunFolderError(
            f"--out {root} holds a run made with other settings: {'; '.join(diffs)}; {ADVICE}"
        )


@dataclass(frozen=True)
class CellIdentity:
    """What a cell's finished rows must match: the resolved graph's fingerprint and overrides."""

    graph_sha: str | None
    overrides: dict[str, Any]


def check_same_cells(root: Path, rows: list[dict[str, Any]], planned: dict[str, CellIdentity]) -> None:
    """Refuse when a finished row of a cell in ``planned`` (cell id -> identity now) was made
    with another resolved graph (rows without a fingerprint compare their overrides)."""
    for r in rows:
        now = planned.get(r["cell"])
        if now is None:
            continue
        then = CellIdentity(r.get("graph_sha"), r["overrides"])
        if then.graph_sha is not None and now.graph_sha is not None:
            same = then.graph_sha == now.graph_sha
        else:
            same = json.dumps(then.overrides, sort_keys=True) == json.dumps(now.overrides, sort_keys=True)
        if not same:
            raise RunFolderError(
                f"--out {root}: cell {r['cell']} was run with another graph "
                f"(overrides {short(then.overrides)}, graph {then.graph_sha} in the run; "
                f"overrides {short(now.overrides)}, graph {now.graph_sha} now); {ADVICE}"
            )


def _graph_name(text: str) -> str | None:
    """The ``graph:`` name of a graph's YAML (read with the graph reader's size limits: the text
    comes from a ``config.json`` that may have been edited), or None."""
    try:
        data, _ = parse_yaml(text)
    except GraphError:
        return None
    return data.get("graph") if isinstance(data, dict) else None
