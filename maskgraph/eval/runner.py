"""``maskgraph eval``: run graphs × tasks × lengths × densities into a resumable run directory.

The run directory's files, how they are read back and what a resume may reuse: see
:mod:`maskgraph.eval.rundir`. Tables (``results.csv``, ``metrics.json``) are rebuilt from the
logs at the end of every run, so a resumed run gives the same tables.

A **cell** is (graph, target density, task, length); its id reads ``quest@5%/niah_multikey/1024``
(``@default`` when the graph's own parameters are used). Each row also records ``graph_sha``,
a fingerprint of the resolved graph (its YAML with every override applied), so that a resume
never mixes samples of two different graphs under one cell id.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CalibrationError, MaskgraphError
from ..ir import Graph
from ..loader import load_graph
from . import protocol as proto
from .bench import BENCHMARKS, check_data, is_bench_task, resolve
from .bench import KIND as BENCH_KIND
from .bench import sample as bench_sample
from .metrics import MicroObserver, summarise
from .rundir import (
    MICRO,
    REFERENCE,
    ROWS,
    CellIdentity,
    RunDir,
    check_same_cells,
    check_same_run,
    metrics_text,
    short,
)
from .sweep import sweep_overrides
from .tasks import TASKS, Template, generate

PPL = "ppl"


@dataclass
class EvalConfig:
    """Everything that defines a run (written to ``config.json``)."""

    model: str
    graphs: list[str]
    tasks: list[str]
    lengths: list[int]
    samples: int = 3
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    densities: list[float] = field(default_factory=list)
    protocol: str = "dense_prefill"
    device: str = "cpu"
    metrics: bool = False
    template: str = "chat"
    ppl_score_share: float = 0.25
    text_file: str | None = None
    data: str | None = None

    def check(self) -> None:
        for t in self.tasks:
            if is_bench_task(t):
                resolve(t)  # names an unknown benchmark or sub-task and the valid ones
            elif t != PPL and t not in TASKS:
                raise MaskgraphError(
                    f"unknown task {t!r}; valid: {', '.join([PPL, *TASKS])}, or <benchmark>:<sub-task> "
                    f"with a benchmark of {', '.join(BENCHMARKS)}"
                )
        if self.protocol not in proto.PROTOCOLS:
            raise MaskgraphError(f"unknown protocol {self.protocol!r}; valid: {', '.join(proto.PROTOCOLS)}")
        if self.template not in ("chat", "plain"):
            raise MaskgraphError(f"template must be 'chat' or 'plain', got {self.template!r}")
        if self.samples < 1 or not self.lengths or min(self.lengths) < 16:
            raise MaskgraphError("need --samples >= 1 and lengths >= 16 tokens")
        if not 0 < self.ppl_score_share < 1:
            raise MaskgraphError("ppl_score_share must be in (0, 1)")
        for name, value in self.overrides.items():
            if not _is_plain(value):
                raise MaskgraphError(
                    f"override {name}={short(str(value))}: not plain data (valid: finite numbers, "
                    "strings, true/false, null, and lists or mappings of those)"
                )


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is JSON data (what config.json and the rows can hold unchanged)."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


@dataclass(frozen=True)
class Variant:
    """One graph at one parameter setting."""

    label: str
    graph_name: str
    target: float | None
    graph: Graph | None
    overrides: dict[str, Any]
    error: str | None = None

    @property
    def graph_sha(self) -> str | None:
        """Fingerprint of the resolved graph (None when its overrides did not apply)."""
        return None if self.graph is None else graph_sha(self.graph)


def graph_sha(graph: Graph) -> str:
    """First 16 hex digits of the SHA-256 of the graph's canonical JSON (params resolved)."""
    text = json.dumps(graph.to_dict(), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def target_tag(target: float | None) -> str:
    return "default" if target is None else f"{round(target * 100, 3):g}%"


def cell_id(label: str, task: str, length: int) -> str:
    return f"{label}/{task}/{length}"


# ----- variants -------------------------------------------------------------------------------
def variants(config: EvalConfig, length: int) -> list[Variant]:
    """Every (graph, density) setting at ``length`` (the sweep rule depends on the length)."""
    out = []
    for path in dict.fromkeys(config.graphs):
        base = load_graph(path)
        own = {k: v for k, v in config.overrides.items() if k in base.params}
        targets: list[float | None] = [None]
        if config.densities and base.params:
            targets = list(dict.fromkeys(config.densities))
        for target in targets:
            ov = dict(sweep_overrides(base.params, target, length)) if target is not None else {}
            ov.update(own)
            label = f"{base.name}@{target_tag(target)}"
            try:
                graph, error = (base.with_overrides(ov) if ov else base), None
            except MaskgraphError as exc:
                graph, error = None, f"error: {exc}"
            out.append(Variant(label, base.name, target, graph, ov, error))
    return out


def check_overrides(config: EvalConfig) -> None:
    """Every ``-p`` name must exist in at least one graph."""
    known: set[str] = set()
    for path in config.graphs:
        known |= set(load_graph(path).params)
    unknown = sorted(set(config.overrides) - known)
    if unknown:
        raise MaskgraphError(f"override(s) {', '.join(unknown)} match no parameter of the given graphs")


def check_graph_names(config: EvalConfig) -> None:
    """Cells are named by graph name: two different files may not share one."""
    seen: dict[str, str] = {}
    for path in dict.fromkeys(config.graphs):
        name = load_graph(path).name
        if name in seen:
            raise MaskgraphError(
                f"graphs {seen[name]} and {path} are both named {name!r} (cells are named by graph); "
                "give one another 'graph:' name"
            )
        seen[name] = path


# ----- run directory --------------------------------------------------------------------------
def open_run(
    config: EvalConfig,
    out: str | Path,
    by_length: dict[int, list[Variant]],
    graph_yaml: dict[str, str] | None = None,
) -> RunDir:
    """Open ``out`` for ``config``: refuse it unless it is new, or a run with the same settings
    whose finished cells ``config`` would compute alike; then record the merged config.

    ``graph_yaml`` maps each entry of ``config.graphs`` to its YAML (read from the files when
    None)."""
    rd = RunDir.open(out, ppl_task=PPL)
    new = json.loads(json.dumps(asdict(config)))
    if graph_yaml is None:
        graph_yaml = {p: load_graph(p).to_yaml() for p in dict.fromkeys(config.graphs)}
    old = rd.read_config()
    if old is not None:
        check_same_run(rd.root, old, new, graph_yaml)
        planned = {
            cell_id(v.label, task, length): CellIdentity(v.graph_sha, v.overrides)
            for length, vs in by_length.items()
            for v in vs
            for task in config.tasks
        }
        check_same_cells(rd.root, rd.read_log(ROWS), planned)
        for key in ("graphs", "tasks", "lengths", "densities"):
            new[key] = list(dict.fromkeys([*old[key], *new[key]]))
        new["samples"] = max(old["samples"], config.samples)
        graph_yaml = {**old["graph_yaml"], **graph_yaml}
    rd.drop_cut_lines()
    rd.write_config({**new, "graph_yaml": graph_yaml, "torch": torch.__version__})
    return rd


# ----- the run --------------------------------------------------------------------------------
@dataclass
class Job:
    """One (length, task, sample index) with the variants still to run on it."""

    length: int
    task: str
    index: int
    todo: list[Variant]


def plan(
    config: EvalConfig,
    by_length: dict[int, list[Variant]],
    done: set[tuple[str, int]],
    first_sample: int = 0,
) -> list[Job]:
    """The jobs still to run: samples ``first_sample`` .. ``config.samples - 1`` of every length
    and task, each with the variants whose (cell, sample) is not in ``done``."""
    jobs = []
    for length, vs in by_length.items():
        for task in config.tasks:
            for index in range(first_sample, config.samples):
                todo = [v for v in vs if (cell_id(v.label, task, length), index) not in done]
                if todo:
                    jobs.append(Job(length, task, index, todo))
    return jobs


def run_eval(
    config: EvalConfig,
    out: str | Path,
    model=None,
    tokenizer=None,
    progress: bool = True,
    retry_errors: bool = False,
) -> dict:
    """Run (or resume) ``config`` into ``out``; returns the metrics written to metrics.json.

    ``retry_errors`` reruns (cell, sample) pairs whose logged status is an error (the newest
    row of a pair is the one tables show).
    """
    config.check()
    check_overrides(config)
    check_graph_names(config)
    check_data(config.tasks, config.data, config.samples, plain=config.template == "plain")
    by_length = {length: variants(config, length) for length in dict.fromkeys(config.lengths)}
    return run_planned(
        config, out, by_length, model=model, tokenizer=tokenizer, progress=progress, retry_errors=retry_errors
    )


def run_planned(
    config: EvalConfig,
    out: str | Path,
    by_length: dict[int, list[Variant]],
    graph_yaml: dict[str, str] | None = None,
    *,
    model=None,
    tokenizer=None,
    load: Callable[[EvalConfig], tuple[Any, Any]] | None = None,
    first_sample: int = 0,
    progress: bool = True,
    retry_errors: bool = False,
) -> dict:
    """Run (or resume) the given variants (length -> variants) into ``out``: samples
    ``first_sample`` .. ``config.samples - 1`` of every task; returns the metrics.

    ``model``/``tokenizer`` are used when given; otherwise ``load(config)`` (default: the shipped
    model ``config.model``) is called, only if something is left to run. ``graph_yaml``: see
    :func:`open_run`.
    """
    rd = open_run(config, out, by_length, graph_yaml)
    jobs = plan(config, by_length, finished_pairs(rd, retry_errors), first_sample)
    total = sum(len(j.todo) for j in jobs)
    if total:
        if model is None:
            model, tokenizer = (load or _load_shipped)(config)
        _execute(config, rd, jobs, total, model, tokenizer, progress)
    return finalise(rd)


def finished_pairs(rd: RunDir, retry_errors: bool = False) -> set[tuple[str, int]]:
    """The (cell, sample) pairs of ``rd`` that a resume skips (with ``retry_errors``, not those
    whose newest row is an error)."""
    return {
        (r["cell"], r["index"])
        for r in _dedupe(rd.read_log(ROWS))
        if not (retry_errors and r["status"].startswith("error"))
    }


def _load_shipped(config: EvalConfig) -> tuple[Any, Any]:
    from ..hf.models import load_model

    return load_model(config.model, device=config.device)


def _execute(config, rd: RunDir, jobs: list[Job], total: int, model, tokenizer, progress: bool) -> None:
    from tqdm.auto import tqdm

    template = Template.chat(tokenizer) if config.template == "chat" else Template()
    refs = {(r["task"], r["length"], r["index"]): r for r in rd.read_log(REFERENCE)}
    text_cache: dict[str, Any] = {}
    bar = tqdm(total=total, disable=not progress, unit="cell-sample", dynamic_ncols=True)
    try:
        for job in jobs:
            bar.set_description(f"{job.task} L={job.length} #{job.index}")
            item = _item(config, job, tokenizer, template, text_cache)
            context = None
            if config.protocol == "dense_prefill" or (job.task, job.length, job.index) not in refs:
                context = _dense_context(model, tokenizer, item, config.device)
            key = (job.task, job.length, job.index)
            if key not in refs:
                refs[key] = _reference(model, tokenizer, item, job, context, config)
                rd.append(REFERENCE, [refs[key]])
            for v in job.todo:
                row, micro = _run_variant(model, tokenizer, item, job, v, context, refs[key], config)
                rd.append(MICRO, micro)
                rd.append(ROWS, [row])
                bar.update(1)
    finally:
        bar.close()


def _item(config, job: Job, tokenizer, template, text_cache) -> dict[str, Any]:
    """What one job runs on: a task sample, or a perplexity window."""
    if job.task == PPL:
        from .text import load_text, windows

        key = f"{config.text_file}:{job.length}"
        if key not in text_cache:
            text, _ = load_text(config.text_file)
            text_cache[key] = windows(tokenizer, text, job.length, config.samples)
        ids = text_cache[key][job.index].to(config.device)
        ctx_len = job.length - max(2, int(job.length * config.ppl_score_share))
        return {"ids": ids, "context_len": ctx_len}
    if is_bench_task(job.task):
        plain = config.template == "plain"
        s = bench_sample(job.task, config.data, tokenizer, job.length, job.index, template, plain)
        return {"sample": s}
    return {"sample": generate(job.task, tokenizer, job.length, config.seed, job.index, template)}


def _dense_context(model, tokenizer, item, device) -> proto.Context:
    if "ids" in item:
        ids = item["ids"][:, : item["context_len"]]
        cache, _ = proto.prefill(model, ids)
        return proto.Context(ids=ids, cache=cache)
    return proto.dense_context(model, tokenizer, item["sample"].context, device)


def _evaluate(model, tokenizer, item, context, config) -> dict[str, Any]:
    """Run one item under the active attention; returns tokens or NLL."""
    if "ids" in item:
        nll, count = proto.window_nll(
            model, item["ids"], item["context_len"], protocol=config.protocol, context=context
        )
        return {"nll": nll, "count": count}
    s = item["sample"]
    toks = proto.answer(
        model,
        tokenizer,
        s.context,
        s.question,
        s.max_new_tokens,
        protocol=config.protocol,
        device=config.device,
        context=context,
    )
    return {"tokens": toks}


def _reference(model, tokenizer, item, job: Job, context, config) -> dict[str, Any]:
    """The plain model's result (its own attention, dense prefill and decode)."""
    if "ids" in item:
        res = proto.window_nll(
            model, item["ids"], item["context_len"], protocol="dense_prefill", context=context
        )
        return {"task": job.task, "length": job.length, "index": job.index, "nll": res[0], "count": res[1]}
    s = item["sample"]
    toks = proto.answer(
        model, tokenizer, s.context, s.question, s.max_new_tokens, protocol="dense_prefill",
        device=config.device, context=context,
    )  # fmt: skip
    return {"task": job.task, "length": job.length, "index": job.index, "tokens": toks}


def _run_variant(model, tokenizer, item, job, v: Variant, context, ref, config):
    from .. import inject

    cell = cell_id(v.label, job.task, job.length)
    row: dict[str, Any] = {
        "cell": cell,
        "graph": v.graph_name,
        "label": v.label,
        "target": v.target,
        "task": job.task,
        "kind": task_kind(job.task),
        "length": job.length,
        "index": job.index,
        "overrides": v.overrides,
        "graph_sha": v.graph_sha,
        "status": "ok",
        "calls": 0,
    }
    if v.error is not None:
        row.update(status=v.error)
        return row, []
    observer = MicroObserver(dense=config.metrics, tags={"cell": cell, "index": job.index})
    start = time.perf_counter()
    try:
        handle = inject(model, v.graph, protocol=config.protocol, observer=observer)
        observer.state = lambda: handle.state
        try:
            with _seeded(row_seed(config.seed, cell, job.index), config.device):
                result = _evaluate(model, tokenizer, item, context, config)
        finally:
            handle.remove()
    except CalibrationError as exc:
        row.update(status=f"not calibrated: {str(exc).splitlines()[0]}")
        return row, []
    except Exception as exc:  # noqa: BLE001 - recorded in the table as the cell's status, never hidden
        row.update(status=f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return row, []
    row["seconds"] = round(time.perf_counter() - start, 3)
    row["calls"] = len(observer.records)
    summary = summarise(observer.records)["overall"]
    row["density"] = summary.get("density")
    row["rel_err"] = summary.get("rel_err")
    row["recall"] = summary.get("recall")
    row["cache"] = summary.get("cache")
    if "nll" in result:
        row.update(nll=result["nll"], count=result["count"], ref_nll=ref["nll"])
        row["score"] = math.exp(result["nll"] / result["count"])
    else:
        s = item["sample"]
        from .scoring import score

        text = tokenizer.decode(result["tokens"], skip_special_tokens=True)
        row.update(
            prediction=text,
            answers=list(s.answers),
            n_tokens=s.n_tokens,
            score=score(text, s.answers, s.metric, s.classes),
            agreement=agreement(result["tokens"], ref["tokens"]),
            ref_score=score(
                tokenizer.decode(ref["tokens"], skip_special_tokens=True), s.answers, s.metric, s.classes
            ),
        )
    return row, observer.records


def row_seed(seed: int, cell: str, index: int) -> int:
    """The seed torch's global generator takes while one (cell, sample) runs: a hash of the
    run's ``seed``, the cell and the sample, so a graph that draws fresh randomness
    (``seed: null``) gives the same row whichever worker runs it and whatever ran before."""
    digest = hashlib.sha256(f"{seed}:{cell}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@contextmanager
def _seeded(seed: int, device: str) -> Iterator[None]:
    """Seed torch's generators (the CPU's and, on CUDA, the device's) for the block; the
    caller's random state is restored after it."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def task_kind(task: str) -> str:
    """The row kind of ``task``: perplexity, a synthetic task's kind, or benchmark."""
    if task == PPL:
        return "perplexity"
    if is_bench_task(task):
        return BENCH_KIND
    return TASKS[task].kind


def agreement(tokens: list[int], reference: list[int]) -> float:
    """Share of the reference's greedy tokens matched at the same position (1.0 = identical)."""
    if not reference:
        return float(tokens == reference)
    return sum(a == b for a, b in zip(tokens, reference)) / len(reference)


# ----- tables -----------------------------------------------------------------------------------
CSV_FIELDS = (
    "cell", "graph", "label", "target", "task", "kind", "length", "index", "status", "score",
    "ref_score", "agreement", "density", "rel_err", "recall", "nll", "ref_nll", "count", "n_tokens",
    "seconds", "prediction", "answers", "overrides",
)  # fmt: skip


def finalise(rd: RunDir) -> dict[str, Any]:
    """Rebuild results.csv and metrics.json from the logs; returns the metrics."""
    rows = _dedupe(rd.read_log(ROWS))
    with open(rd.path("results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_value(r.get(k)) for k in CSV_FIELDS})
    metrics = {"cells": aggregate_cells(rows, rd.read_log(MICRO))}
    rd.path("metrics.json").write_text(metrics_text(metrics))
    return metrics


def aggregate_cells(rows: list[dict], micro: list[dict]) -> dict[str, dict[str, Any]]:
    """Cell id -> aggregates (what ``metrics.json`` holds) of the newest row of each
    (cell, sample) in ``rows`` and the micro records ``micro`` of their attention calls."""
    rows = _dedupe(rows)
    by_cell = _micro_of_rows(rows, micro)
    return {cell: _aggregate(group, by_cell.get(cell, [])) for cell, group in _group(rows)}


def _dedupe(rows: list[dict]) -> list[dict]:
    """The newest row of each (cell, sample)."""
    seen: dict[tuple[str, int], dict] = {}
    for r in rows:
        seen[(r["cell"], r["index"])] = r
    return sorted(seen.values(), key=lambda r: (r["cell"], r["index"]))


def _micro_of_rows(rows: list[dict], records: list[dict]) -> dict[str, list[dict]]:
    """Per cell, the micro records of its rows: of each (cell, sample), the last ``calls``
    records (those of the run that wrote the row; an interrupted run may have logged calls
    of a sample whose row it never wrote). Rows without ``calls`` keep all their records."""
    by_sample: dict[tuple[str, int], list[dict]] = {}
    for rec in records:
        by_sample.setdefault((rec["cell"], rec["index"]), []).append(rec)
    out: dict[str, list[dict]] = {}
    for r in rows:
        recs = by_sample.get((r["cell"], r["index"]), [])
        calls = r.get("calls")
        if calls is not None:
            recs = recs[len(recs) - calls :] if calls else []
        out.setdefault(r["cell"], []).extend(recs)
    return out


def _group(rows: list[dict]) -> Iterator[tuple[str, list[dict]]]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["cell"], []).append(r)
    yield from sorted(groups.items())


def _csv_value(v: Any) -> Any:
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


@dataclass(frozen=True)
class Interval:
    """A confidence interval: ``low`` <= ``high``."""

    low: float
    high: float


def wilson95(mean: float, n: int) -> Interval:
    """The Wilson score 95 % interval of a proportion ``mean`` in [0, 1] observed on ``n`` >= 1
    samples (a mean of per-sample scores in [0, 1] is taken as such a proportion)."""
    z2 = Z95 * Z95
    centre = (mean + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 / (1 + z2 / n) * math.sqrt(max(0.0, mean * (1 - mean)) / n + z2 / (4 * n * n))
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def _aggregate(rows: list[dict], micro: list[dict]) -> dict[str, Any]:
    first = rows[0]
    ok = [r for r in rows if r["status"] == "ok"]
    out: dict[str, Any] = {
        k: first[k] for k in ("graph", "label", "target", "task", "kind", "length", "overrides")
    }
    out["samples"] = len(ok)
    out["status"] = "ok" if len(ok) == len(rows) else next(r["status"] for r in rows if r["status"] != "ok")
    if first["task"] == PPL and ok:
        out["ppl"] = math.exp(sum(r["nll"] for r in ok) / sum(r["count"] for r in ok))
        out["ref_ppl"] = math.exp(sum(r["ref_nll"] for r in ok) / sum(r["count"] for r in ok))
        out["nlls"] = [r["nll"] for r in ok]  # per window, for the report's intervals
        out["counts"] = [r["count"] for r in ok]
    elif ok:
        mean = _mean([r["score"] for r in ok])
        out["score"] = 100 * mean
        ci = wilson95(mean, len(ok))  # on 0-100, as the score
        out["score_low"], out["score_high"] = 100 * ci.low, 100 * ci.high
        out["ref_score"] = 100 * _mean([r["ref_score"] for r in ok])
        out["scores"] = [100 * r["score"] for r in ok]  # per sample, for the report's intervals
        out["agreement"] = _mean([r["agreement"] for r in ok])
        out["agreements"] = [r["agreement"] for r in ok]  # per sample, for the report's intervals
    if micro:
        s = summarise(micro)
        out["density"] = s["overall"].get("density")
        out["rel_err"] = s["overall"].get("rel_err")
        out["recall"] = s["overall"].get("recall")
        out["cache"] = s["overall"].get("cache")
        out["decode_density"] = s["overall"].get("decode_density")
        out["decode_cache"] = s["overall"].get("decode_cache")
        # layer -> metric -> mean (4 significant digits), and [mean per head] (3): small tables
        out["per_layer"] = {
            str(k): {n: _significant(v, 4) for n, v in m.items()} for k, m in s["per_layer"].items()
        }
        out["per_head"] = {
            str(k): {n: [_significant(x, 3) for x in vals] for n, vals in m.items()}
            for k, m in s["per_head"].items()
        }
    return out


def _significant(x: float, digits: int) -> float:
    """``x`` rounded to ``digits`` significant digits (keeps metrics.json small)."""
    return float(f"{x:.{digits - 1}e}")
