"""``maskgraph sweep --search``: per graph and target density, the parameters that reach the
target with the least output error, found with Ray Tune (docs/sweeps.md, "Search").

For each graph item and each target ``d`` of the file's ``search:`` block, Tune runs trials over
the item's search space — every ``grid`` value (``tune.grid_search``) and, for ``ranges``,
``search.trials`` draws (``tune.uniform``, ``tune.randint`` for integers) by Tune's basic
variant searcher — on top of the density rule's parameters for ``d`` and the item's ``params``.
A trial is one variant run on ``search.samples`` samples of ``search.task`` at
``search.length`` tokens with the micro metrics on; it reports the **measured** density, the
relative output error and the recall. The objective:

- a setting whose measured density is at most ``d·(1 + tolerance)`` scores its metric
  (``rel_err``, or ``1 − recall``);
- any other scores ``10 + measured/d``, so that every feasible setting beats every infeasible
  one and, among infeasible ones, the sparsest wins.

The chosen settings are written as graph files, ``OUT/search/<name>@<d>.yaml`` (the graph named
``<name>_at_<d>pct``, its ``params:`` block holding the chosen values), which ``maskgraph eval``
and ``mg.inject`` take directly; ``OUT/search/results.json`` lists every choice with its measured
density and metrics. Each trial's rows are kept in an ``eval`` run folder under
``OUT/search/runs/``, so a rerun of the search reuses finished samples.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import MaskgraphError
from ..loader import load_graph
from ..outputs import writable_folder
from .runner import cell_id, target_tag
from .sweep import sweep_overrides
from .sweepfile import GraphEntry, SearchSpec, SweepSpec, Trial, VariantSpec
from .trials import ModelCache, run_trial

SEARCH = "search"
INFEASIBLE = 10.0


@dataclass(frozen=True)
class Choice:
    """The best setting found for one graph at one target density."""

    graph: str
    target: float
    file: str | None
    overrides: dict[str, Any]
    density: float | None
    rel_err: float | None
    recall: float | None
    feasible: bool
    trials: int


def objective(metrics: dict[str, Any], target: float, spec: SearchSpec) -> float:
    """The value Tune minimises (see the module docstring); a failed trial scores worst."""
    density = metrics.get("density")
    value = metrics.get("rel_err") if spec.metric == "rel_err" else _one_minus(metrics.get("recall"))
    if density is None or value is None:
        return 2 * INFEASIBLE
    if density <= target * (1 + spec.tolerance):
        return float(value)
    return INFEASIBLE + density / target


def _one_minus(v: float | None) -> float | None:
    return None if v is None else 1.0 - v


def base_overrides(
    entry: GraphEntry, target: float, length: int, calibration: dict[str, Any]
) -> dict[str, Any]:
    """The density rule's parameters for ``target`` with the default calibration files of the
    searched model (:attr:`SweepSpec.calibration`) and the item's fixed ``params`` on top."""
    base = load_graph(entry.yaml)
    return {**sweep_overrides(base.params, target, length), **calibration, **entry.params}


def _calibration(spec_json: dict[str, Any], entry: GraphEntry) -> dict[str, Any]:
    """The searched model's default calibration parameters of ``entry``'s graph."""
    return spec_json.get("calibration", {}).get(spec_json["models"][0], {}).get(entry.graph, {})


def evaluate(
    root: str, spec_json: dict[str, Any], entry: GraphEntry, overrides: dict[str, Any], cache: ModelCache
) -> dict[str, Any]:
    """Run one setting of ``entry`` on the search's samples; returns its cell's metrics (with
    ``status``)."""
    search = spec_json["search"]
    settings = {**spec_json["settings"], "metrics": True}
    key = json.dumps(overrides, sort_keys=True)
    tag = hashlib.sha256(key.encode()).hexdigest()[:10]
    label = f"{entry.name}@search-{tag}"
    variant = VariantSpec(label, entry.graph, entry.yaml, None, dict(overrides))
    trial = Trial(
        model=spec_json["models"][0],
        task=search["task"],
        length=search["length"],
        start=0,
        stop=search["samples"],
        settings=settings,
        variants=(variant,),
    )
    folder_root = Path(root) / "runs" / tag
    result = run_trial(folder_root, trial, cache)
    if result.status != "done":
        return {"status": "failed", "error": result.error}
    metrics = json.loads((folder_root / "trials" / trial.id / "metrics.json").read_text())
    cell = metrics["cells"].get(cell_id(label, search["task"], search["length"]), {})
    return {k: cell.get(k) for k in ("status", "density", "rel_err", "recall")}


_TUNE_CACHE: ModelCache | None = None


def _tune_trial(config: dict[str, Any], root: str, spec_json: dict, entry: GraphEntry, target: float) -> None:
    """A Tune function trainable: one setting, one report (its actor keeps the model loaded)."""
    from ray import tune

    from .sweepfile import SearchSpec

    global _TUNE_CACHE
    if _TUNE_CACHE is None:
        _TUNE_CACHE = ModelCache()
    length = spec_json["search"]["length"]
    overrides = {**base_overrides(entry, target, length, _calibration(spec_json, entry)), **config}
    got = evaluate(root, spec_json, entry, overrides, _TUNE_CACHE)
    score = objective(got, target, SearchSpec(**spec_json["search"]))
    tune.report({**{k: v for k, v in got.items() if v is not None}, "objective": score})


def space(entry: GraphEntry, trials: int) -> tuple[dict[str, Any], int]:
    """Tune's parameter space of ``entry`` and its ``num_samples``."""
    from ray import tune

    out: dict[str, Any] = {k: tune.grid_search(list(v)) for k, v in entry.grid.items()}
    for k, (low, high) in entry.ranges.items():
        both_int = isinstance(low, int) and isinstance(high, int)
        out[k] = tune.randint(low, high + 1) if both_int else tune.uniform(low, high)
    return out, (trials if entry.ranges else 1)


def run_search(
    spec: SweepSpec, out: str | Path, address: str | None = None, workers: int | None = None
) -> list[Choice]:
    """Search every graph item of ``spec`` at every target of ``spec.search`` (see the module
    docstring); writes the chosen graphs and ``results.json`` under ``out/search``."""
    if spec.search is None:
        raise MaskgraphError(
            f"{spec.file}: --search needs a 'search:' block (target densities, task, samples; docs/sweeps.md)"
        )
    if len(spec.models) != 1:
        raise MaskgraphError(f"{spec.file}: --search tunes on one model; the file lists {len(spec.models)}")
    from .sweeprun import import_ray, init_ray

    ray = import_ray()
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    root = writable_folder(Path(out) / SEARCH, what="--out")
    root.mkdir(parents=True, exist_ok=True)
    spec_json = spec.to_json()
    started_here = not ray.is_initialized()
    if started_here:
        init_ray(ray, address)
    choices: list[Choice] = []
    try:
        for entry in spec.graphs:
            if not load_graph(entry.yaml).params:
                continue  # nothing to tune (dense)
            for target in spec.search.densities:
                choices.append(
                    _search_one(tune, BasicVariantGenerator, root, spec, spec_json, entry, target, workers)
                )
    finally:
        if started_here:
            ray.shutdown()
    (root / "results.json").write_text(json.dumps([asdict(c) for c in choices], indent=2), encoding="utf-8")
    return choices


def _search_one(tune, searcher_cls, root: Path, spec: SweepSpec, spec_json, entry, target, workers) -> Choice:
    assert spec.search is not None
    param_space, num_samples = space(entry, spec.search.trials)
    res = spec.resources
    trainable = tune.with_resources(
        tune.with_parameters(_tune_trial, root=str(root), spec_json=spec_json, entry=entry, target=target),
        {"cpu": res.num_cpus, "gpu": res.num_gpus},
    )
    name = f"{entry.name}@{target_tag(target)}"
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric="objective",
            mode="min",
            num_samples=num_samples,
            search_alg=searcher_cls(max_concurrent=workers or 0, random_state=spec.settings["seed"]),
        ),
        run_config=tune.RunConfig(
            name=_safe(name), storage_path=str((root / "tune").resolve()), verbose=0, log_to_file=True
        ),
    )
    results = tuner.fit()
    best = results.get_best_result()
    metrics = best.metrics or {}
    calibration = _calibration(spec_json, entry)
    overrides = {**base_overrides(entry, target, spec.search.length, calibration), **(best.config or {})}
    feasible = metrics.get("objective", 2 * INFEASIBLE) < INFEASIBLE
    file = None
    if metrics.get("density") is not None:
        graph = load_graph(entry.yaml).with_overrides(overrides)
        graph.name = f"{entry.name}_at_{target_tag(target).rstrip('%')}pct"
        path = root / f"{_safe(name)}.yaml"
        path.write_text(graph.to_yaml(), encoding="utf-8")
        file = str(path)
    return Choice(
        graph=entry.name,
        target=target,
        file=file,
        overrides=overrides,
        density=metrics.get("density"),
        rel_err=metrics.get("rel_err"),
        recall=metrics.get("recall"),
        feasible=feasible,
        trials=len(results),
    )


def _safe(name: str) -> str:
    """A file name of ``name`` (``%`` kept, path separators replaced)."""
    return name.replace(os.sep, "_").replace("/", "_")
