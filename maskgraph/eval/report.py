"""``maskgraph report``: a markdown leaderboard and PNG plots from one or more run directories.

Tables (one row per graph setting, the plain dense model first, then ``dense``):

- retrieval tasks (needles, variable tracking): RULER score (0–100) per task and length, with
  its Wilson 95 % interval over the cell's samples, ``score [low–high]``;
- aggregation tasks (common/frequent-word extraction), reported separately;
- the standard benchmarks' sub-tasks (``longbench:qasper`` …), each scored by its own metric
  (with the same interval);
- perplexity on long text, and its ratio to dense;
- for every row: the **measured** density (mean over its attention calls), the **kept cache**
  (the share of keys the method must hold: 1 for methods that keep every key, below 1 for
  those that evict; "–" for runs made before it was measured), both again over the decode
  steps alone (calls of one query; score tables), agreement of greedy tokens with dense (with
  its 95 % bootstrap interval over samples), and (runs with ``--metrics``) relative output error and recall;
- the published trend, checked (:func:`trend_section`): at matched measured density, is the
  order oracle top-k ≥ vAttention ≥ Quest/HashAttention/Double Sparsity ≥ StreamingLLM ≥
  random sampling kept on the retrieval tasks, with Wilson intervals.

The *setting* column is the part of a row's label after ``@``: a target density (``5%``), a
sweep's grid point (``heavy_size=0.05``) or ``default``.

Plots: ``<prefix>accuracy_vs_density.png`` (mean score on a 0–100 axis and perplexity against
measured density in %, one line per method, each with its own colour and marker, 95 % bootstrap
intervals over samples as error bars, dense attention as a dashed reference line: a Pareto
view), ``<prefix>error_per_layer.png`` (relative output error per layer, one line per method
at the setting nearest a chosen density), ``<prefix>per_layer.png`` (measured density,
relative output error and recall per layer, on the longest context measured) and
``<prefix>per_head.png`` (the same three as layer × head heat maps for a few graphs).

A sweep folder (``maskgraph sweep``) is read like a run. With several models or context lengths,
the report has one section per model and length (``## smollm2, 4096 tokens``) and its plots are
named ``<prefix><model>_<length>_*.png`` (each part only where it differs between sections).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MaskgraphError
from .rundir import read_metrics

REFERENCE = "dense (model's own attention)"


def load_cells(run_dirs: list[str | Path]) -> list[dict[str, Any]]:
    """Every cell of every run directory's (or sweep folder's) metrics.json (later directories
    win on clashes). Cells of a sweep carry their ``model``."""
    cells: dict[tuple, dict[str, Any]] = {}
    for d in run_dirs:
        p = Path(d) / "metrics.json"
        if not p.is_file():
            raise MaskgraphError(
                f"{d} has no metrics.json (is it a 'maskgraph eval' run directory or a 'maskgraph sweep' folder?)"
            )
        run_model = _run_model(Path(d))
        for cell in read_metrics(p).values():
            cell = {**cell, "model": cell.get("model", run_model)}
            cells[(cell["model"], cell["label"], cell["task"], cell["length"])] = cell
    return list(cells.values())


def _run_model(folder: Path) -> str | None:
    """The model of an eval run folder (its config.json), or None for a folder without one (a
    sweep folder: its cells carry their models); a malformed config.json is a
    :class:`~maskgraph.errors.RunFolderError` naming it."""
    from .rundir import RunDir

    config = RunDir(folder, ppl_task="ppl").read_config()
    return None if config is None else config["model"]


def _order_key(label: str, graph: str, target: float | None) -> tuple:
    first = {"dense": 0, "streaming_llm": 1, "oracle_topk": 2, "oracle_topp": 3}
    return (first.get(graph, 9), graph, -1 if target is None else target, label)


def _rows(cells: list[dict]) -> list[tuple[str, str, float | None]]:
    seen = {(c["label"], c["graph"], c["target"]) for c in cells}
    return sorted(seen, key=lambda r: _order_key(*r))


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _mean(vals: list[float | None]) -> float | None:
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def _cell_text(c: dict | None, key: str, spec: str) -> str:
    if c is None:
        return "–"
    if c["status"] != "ok" and c.get(key) is None:
        return "n/a¹" if c["status"].startswith("not calibrated") else "err²"
    return _fmt(c.get(key), spec)


def _score_text(c: dict | None) -> str:
    """A cell's score with its Wilson 95 % interval, ``71.4 [35.9–91.8]`` (the score alone for
    cells written before intervals were)."""
    text = _cell_text(c, "score", ".1f")
    if c is None or c.get("score") is None or c.get("score_low") is None or c.get("score_high") is None:
        return text
    return f"{text} [{c['score_low']:.1f}–{c['score_high']:.1f}]"


def leaderboard(cells: list[dict]) -> str:
    """The markdown tables (see module docstring)."""
    by = {(c["label"], c["task"], c["length"]): c for c in cells}
    rows = _rows(cells)
    parts: list[str] = []
    for kind, title in (
        ("retrieval", "Retrieval (RULER score, 0–100)"),
        ("aggregation", "Aggregation (RULER score, 0–100)"),
        ("benchmark", "Standard benchmarks (each sub-task's own metric, 0–100)"),
    ):
        cols = sorted({(c["task"], c["length"]) for c in cells if c["kind"] == kind})
        if cols:
            parts.append(_score_table(title, cols, rows, by))
    ppl_cols = sorted({c["length"] for c in cells if c["kind"] == "perplexity"})
    if ppl_cols:
        parts.append(_ppl_table(ppl_cols, rows, by))
    notes = sorted({c["status"] for c in cells if c["status"] != "ok"})
    if notes:
        legend = "¹ n/a: the graph needs a calibration file that was not given; ² err: the cell failed."
        parts.append(f"{legend} Statuses:\n\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


def _row_stats(label: str, cells: list[dict]) -> dict[str, float | None]:
    mine = [c for c in cells if c["label"] == label and c["status"] == "ok"]
    return {
        "density": _mean([c.get("density") for c in mine]),
        "agreement": _mean([c.get("agreement") for c in mine]),
        "rel_err": _mean([c.get("rel_err") for c in mine]),
        "recall": _mean([c.get("recall") for c in mine]),
        "cache": _mean([c.get("cache") for c in mine]),
        "decode_density": _mean([c.get("decode_density") for c in mine]),
        "decode_cache": _mean([c.get("decode_cache") for c in mine]),
    }


def _decode_text(density: float | None, cache: float | None) -> str:
    """The decode-step density and kept cache of a row, ``0.050 / 0.050`` (– where unknown)."""
    if density is None:
        return "–"
    return f"{_fmt(density, '.3f')} / {_fmt(cache, '.3f')}"


def _score_table(title: str, cols, rows, by) -> str:
    head = ["graph", "setting", "measured density", "kept cache", "decode: density / cache"]
    head += [f"{t} @{n}" for t, n in cols]
    head += ["mean", "agreement", "rel. err", "recall", "samples"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    refs = [_reference_cell([by[k] for k in by if (k[1], k[2]) == col]) for col in cols]
    ref = [None if c is None else c["ref_score"] for c in refs]
    lines.append(
        "| "
        + " | ".join(
            [REFERENCE, "–", "1.000", "1.000", "1.000 / 1.000"]
            + [_reference_text(c) for c in refs]
            + [_fmt(_mean(ref)), "1.000", "0", "1", _samples(refs)]
        )
        + " |"
    )
    for label, graph, target in rows:
        mine = [by.get((label, t, n)) for t, n in cols]
        scores = [c.get("score") if c else None for c in mine]
        st = _row_stats(label, [c for c in mine if c])
        if all(c is None for c in mine):
            continue
        lines.append(
            "| "
            + " | ".join(
                [graph, _setting(label, target), _fmt(st["density"], ".3f"), _fmt(st["cache"], ".3f")]
                + [_decode_text(st["decode_density"], st["decode_cache"])]
                + [_score_text(c) for c in mine]
                + [
                    _fmt(_mean(scores)),
                    _agreement_text([c for c in mine if c and c["status"] == "ok"]),
                    _fmt(st["rel_err"], ".3f"),
                    _fmt(st["recall"], ".3f"),
                    _samples(mine),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def agreement_interval(cells: list[dict]) -> tuple[float, float] | None:
    """95 % bootstrap interval of the mean over ``cells`` of their agreement with dense
    (each cell's per-sample agreements resampled, :data:`BOOTSTRAP` times, seed :data:`SEED`);
    None when a cell lacks per-sample agreements or no cell has two samples."""
    import numpy as np

    if (
        not cells
        or any(not c.get("agreements") for c in cells)
        or all(len(c["agreements"]) < 2 for c in cells)
    ):
        return None
    rng = np.random.default_rng(SEED)
    draws = []
    for c in cells:
        a = np.asarray(c["agreements"], dtype=float)
        draws.append(a[rng.integers(0, len(a), size=(BOOTSTRAP, len(a)))].mean(1))
    low, high = np.percentile(np.mean(np.stack(draws), axis=0), [2.5, 97.5])
    return float(low), float(high)


def _agreement_text(cells: list[dict]) -> str:
    """A row's mean agreement with its bootstrap interval, ``0.875 [0.750–0.969]``."""
    text = _fmt(_mean([c.get("agreement") for c in cells]), ".3f")
    ci = agreement_interval(cells)
    return text if ci is None else f"{text} [{ci[0]:.3f}–{ci[1]:.3f}]"


def _reference_cell(cells: list[dict]) -> dict | None:
    """The cell of a column whose reference score (the plain model's, on the same prompts for
    every graph) rests on the most samples; None when no cell has one."""
    return max((c for c in cells if c.get("ref_score") is not None), key=lambda c: c["samples"], default=None)


def _reference_text(cell: dict | None) -> str:
    """The plain model's score with its Wilson 95 % interval over the cell's samples."""
    from .runner import wilson95

    if cell is None:
        return "–"
    if not cell["samples"]:
        return _fmt(cell["ref_score"])
    ci = wilson95(cell["ref_score"] / 100, cell["samples"])
    return f"{cell['ref_score']:.1f} [{100 * ci.low:.1f}–{100 * ci.high:.1f}]"


def ppl_interval(cell: dict) -> tuple[float, float] | None:
    """95 % bootstrap interval of a perplexity cell (its windows resampled, :data:`BOOTSTRAP`
    times, seed :data:`SEED`); None with fewer than two windows."""
    import numpy as np

    if len(cell.get("nlls") or []) < 2:
        return None
    draws = _cell_draws(cell, "ppl", np.random.default_rng(SEED))
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def _ppl_text(cell: dict | None) -> str:
    text = _cell_text(cell, "ppl", ".2f")
    ci = None if cell is None or cell.get("ppl") is None else ppl_interval(cell)
    return text if ci is None else f"{text} [{ci[0]:.2f}–{ci[1]:.2f}]"


def _ppl_table(lengths, rows, by) -> str:
    head = (
        ["graph", "setting", "measured density", "kept cache"]
        + [f"ppl @{n}" for n in lengths]
        + [f"ratio to dense @{n}" for n in lengths]
    )
    lines = ["### Perplexity (long text)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = [_mean([by[k].get("ref_ppl") for k in by if k[1] == "ppl" and k[2] == n]) for n in lengths]
    lines.append(
        "| "
        + " | ".join(
            [REFERENCE, "–", "1.000", "1.000"] + [_fmt(v, ".2f") for v in ref] + ["1.00"] * len(lengths)
        )
        + " |"
    )
    for label, graph, target in rows:
        mine = [by.get((label, "ppl", n)) for n in lengths]
        if all(c is None for c in mine):
            continue
        dens = _mean([c.get("density") for c in mine if c and c["status"] == "ok"])
        cache = _mean([c.get("cache") for c in mine if c and c["status"] == "ok"])
        ratios = [
            _fmt(c["ppl"] / r, ".2f") if c and c.get("ppl") is not None and r else _cell_text(c, "ppl", ".2f")
            for c, r in zip(mine, ref)
        ]
        lines.append(
            "| "
            + " | ".join(
                [graph, _setting(label, target), _fmt(dens, ".3f"), _fmt(cache, ".3f")]
                + [_ppl_text(c) for c in mine]
                + ratios
            )
            + " |"
        )
    return "\n".join(lines)


def _samples(cells: list[dict | None]) -> str:
    """Samples behind each of the row's columns ("3", or "4/3/4" when columns differ)."""
    counts = [str(c["samples"]) if c is not None else "0" for c in cells]
    return counts[0] if len(set(counts)) == 1 else "/".join(counts)


def _setting(label: str, target: float | None) -> str:
    """What a row's graph runs at: the part of its label after ``@`` (``5%``, ``default``,
    ``heavy_size=0.05``)."""
    if "@" in label:
        return label.split("@", 1)[1]
    return "default" if target is None else f"{target * 100:g}%"


# ----- plots ------------------------------------------------------------------------------------
#: Bootstrap resamples of a point's 95 % interval, and their seed (the same figure every time).
BOOTSTRAP = 2000
SEED = 0
#: Markers cycled with the colours, so that methods differ in shape too (and in greyscale).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
#: The dense reference line's colour; no method gets it.
REFERENCE_COLOUR = "black"
#: A perplexity axis spans at least this share of the dense perplexity (no zoom into noise).
PPL_MIN_SPAN = 0.10


@dataclass(frozen=True)
class Point:
    """One setting of a method on a panel: measured density (0–1), value, and its 95 %
    interval (``low``, ``high``; None without per-sample data or with one sample)."""

    density: float
    value: float
    low: float | None = None
    high: float | None = None


#: The panels of :func:`plot_accuracy_vs_density`: kind, value key, reference key, y label, title.
PANELS = (
    ("retrieval", "score", "ref_score", "mean retrieval score (RULER, 0–100)", "Retrieval"),
    ("aggregation", "score", "ref_score", "mean aggregation score (RULER, 0–100)", "Aggregation"),
    ("benchmark", "score", "ref_score", "mean benchmark score (own metrics, 0–100)", "Benchmarks"),
    ("perplexity", "ppl", "ref_ppl", "perplexity (lower is better)", "Perplexity"),
)


def plot_accuracy_vs_density(cells: list[dict], path: Path) -> bool:
    """Write :func:`accuracy_figure` to ``path``; False if there is no data."""
    fig = accuracy_figure(cells)
    if fig is None:
        return False
    _save(fig, path)
    return True


def accuracy_figure(cells: list[dict]):
    """Mean score (retrieval, aggregation; 0–100) and perplexity against measured density (%),
    one panel each (those with data; None if none has), one line per method with 95 %
    intervals as error bars and dense attention as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # a panel needs a method (a kind only the dense check ran draws nothing but its reference)
    panels = [
        p
        for p in PANELS
        if any(c["kind"] == p[0] and c["status"] == "ok" and c["graph"] != "dense" for c in cells)
    ]
    if not panels:
        return None
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5.2 * len(panels) + 2, 4.8), squeeze=False, layout="constrained"
    )
    for ax, (kind, key, ref_key, ylabel, title) in zip(axes[0], panels):
        values = _density_panel(ax, cells, kind, key, ref_key)
        _percent_density_axis(ax)
        if kind == "perplexity":
            _ppl_limits(ax, values)
        else:
            ax.set_ylim(-4, 104)
        ax.set_xlabel("measured density (% of allowed keys attended)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} vs measured density")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = _legend_entries(axes[0])
    fig.legend(
        handles,
        labels,
        loc="outside right upper",
        fontsize=8,
        title="error bars: 95 % intervals",
        title_fontsize=7,
    )
    return fig


def _legend_entries(axes) -> tuple[list, list[str]]:
    """Every method's legend entry once, over all panels, in drawing order."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    return list(entries.values()), list(entries)


def _percent_density_axis(ax) -> None:
    """A log density axis whose ticks read as plain percentages (1 %, 2 %, 5 %, 10 %, …)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 * x:g} %"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _plain_log_axis(ax) -> None:
    """A log y axis ticked at 1, 2 and 5 times powers of ten, written as plain numbers (0.05)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    axis = ax.yaxis
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    axis.set_minor_formatter(NullFormatter())


def _ppl_limits(ax, values: list[float]) -> None:
    """Linear limits around the values that span at least :data:`PPL_MIN_SPAN` of the dense
    perplexity (the first value), so that differences below it look as small as they are."""
    if not values:
        return
    low, high = min(values), max(values)
    span = max(high - low, PPL_MIN_SPAN * values[0])
    middle = (low + high) / 2
    ax.set_ylim(middle - 0.6 * span, middle + 0.6 * span)


def _finish_axes(ax) -> None:
    """Grid and a compact legend, the same in every plot."""
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def _save(fig, path) -> None:
    """Write ``fig`` as PNG to ``path`` and free it."""
    import matplotlib.pyplot as plt

    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _methods(cells: list[dict]) -> list[str]:
    """The graphs drawn as methods (every graph but ``dense``, the reference), in table order."""
    return sorted({c["graph"] for c in cells if c["graph"] != "dense"}, key=lambda g: _order_key("", g, None))


def _style(cells: list[dict], graph: str) -> dict[str, Any]:
    """The same colour and marker for a graph in every panel and plot: tab10's colours, then
    tab20's dark halves, each with its own marker."""
    import matplotlib

    names = _methods(cells)
    i = names.index(graph) if graph in names else len(names)
    palette = [*matplotlib.colormaps["tab10"].colors, *matplotlib.colormaps["tab20b"].colors[::4]]
    return {"color": palette[i % len(palette)], "marker": MARKERS[i % len(MARKERS)]}


def _density_panel(ax, cells: list[dict], kind: str, key: str, ref_key: str) -> list[float]:
    """One line per method: mean ``key`` of its ``kind`` cells against measured density, with
    95 % intervals; dense attention as a dashed reference line. Returns the values drawn (the
    reference first, when there is one)."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    drawn: list[float] = []
    # the reference on the tasks the methods ran (a dense check may have covered more)
    with_ref = [c for c in cells if c["kind"] == kind and c.get(ref_key) is not None]
    refs = [c[ref_key] for c in with_ref if c["graph"] != "dense"] or [c[ref_key] for c in with_ref]
    if refs:
        ref = sum(refs) / len(refs)
        drawn.append(ref)
        ax.axhline(ref, color=REFERENCE_COLOUR, linestyle="--", linewidth=1, label="dense attention")
    for graph in _methods(cells):
        points = []
        for label, g, _ in _rows(cells):
            if g != graph:
                continue
            mine = [c for c in cells if c["label"] == label and c["kind"] == kind and c["status"] == "ok"]
            point = _point(mine, key, rng)
            if point is not None:
                points.append(point)
        if not points:
            continue
        points.sort(key=lambda p: p.density)
        xs, ys = [p.density for p in points], [p.value for p in points]
        low = [p.value - p.low if p.low is not None else 0.0 for p in points]
        high = [p.high - p.value if p.high is not None else 0.0 for p in points]
        ax.errorbar(
            xs,
            ys,
            yerr=[low, high],
            label=graph,
            capsize=3,
            linewidth=1.2,
            markersize=5,
            **_style(cells, graph),
        )
        drawn += (
            ys + [p.low for p in points if p.low is not None] + [p.high for p in points if p.high is not None]
        )
    return drawn


def _point(cells: list[dict], key: str, rng) -> Point | None:
    """The mean over ``cells`` (one per task and length) of density and ``key``, with a 95 %
    bootstrap interval of that mean: each cell's samples resampled, the cells' values averaged
    (perplexity: exp of the pooled nll per token of the resampled windows)."""
    import numpy as np

    d, v = _mean([c.get("density") for c in cells]), _mean([c.get(key) for c in cells])
    if d is None or v is None:
        return None
    draws = [_cell_draws(c, key, rng) for c in cells]
    if any(x is None for x in draws) or all(_n(c) < 2 for c in cells):
        return Point(d, v)
    mean = np.mean(np.stack(draws), axis=0)
    low, high = np.percentile(mean, [2.5, 97.5])
    return Point(d, v, float(low), float(high))


def _n(cell: dict) -> int:
    return len(cell.get("scores") or cell.get("nlls") or [])


def _cell_draws(cell: dict, key: str, rng):
    """:data:`BOOTSTRAP` resampled values of one cell's ``key`` (None without per-sample data)."""
    import numpy as np

    if key == "ppl":
        if not cell.get("nlls"):
            return None
        nll, count = np.asarray(cell["nlls"], dtype=float), np.asarray(cell["counts"], dtype=float)
        pick = rng.integers(0, len(nll), size=(BOOTSTRAP, len(nll)))
        return np.exp(nll[pick].sum(1) / count[pick].sum(1))
    if not cell.get("scores"):
        return None
    scores = np.asarray(cell["scores"], dtype=float)
    return scores[rng.integers(0, len(scores), size=(BOOTSTRAP, len(scores)))].mean(1)


def plot_error_per_layer(cells: list[dict], path: Path, density: float = 0.1) -> bool:
    """Relative output error per layer (a log axis with plain ticks), one line per graph at its
    target nearest ``density`` (not ``dense``, whose error is 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_graph: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for c in cells:
        if (
            c["status"] == "ok"
            and c.get("per_layer")
            and c.get("rel_err") is not None
            and c["graph"] != "dense"
        ):
            per_graph[c["graph"]][c["label"]].append(c)
    if not per_graph:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _graph, labels in sorted(per_graph.items()):
        label, group = min(labels.items(), key=lambda kv: abs((kv[1][0]["target"] or 1.0) - density))
        layers = sorted({int(k) for c in group for k in c["per_layer"]})
        ys = [_mean([c["per_layer"].get(str(i), {}).get("rel_err") for c in group]) for i in layers]
        ax.plot(layers, ys, label=label, markersize=4, **_style(cells, group[0]["graph"]))
    _plain_log_axis(ax)
    ax.set_xlabel("layer")
    ax.set_ylabel("relative output error ‖O−O_dense‖/‖O_dense‖")
    ax.set_title(f"Output error per layer (per graph, the setting whose target is nearest {density:.0%})")
    _finish_axes(ax)
    _save(fig, path)
    return True


def write_report(
    run_dirs: list[str | Path],
    out: str | Path,
    img_dir: str | Path | None = None,
    prefix: str = "",
    command: str | None = None,
) -> dict:
    """Write the leaderboard markdown to ``out`` and plots to ``img_dir``; returns paths written.
    ``command``: the command line that made the report, printed above the tables."""
    cells = load_cells(run_dirs)
    out = Path(out)
    img = Path(img_dir) if img_dir is not None else out.parent
    img.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"markdown": str(out), "plots": []}
    sections: dict[tuple[str | None, int], list[dict]] = defaultdict(list)
    for c in cells:
        sections[(c.get("model"), c["length"])].append(c)
    models = {m for m, _ in sections}
    lengths = {n for _, n in sections}
    parts = []
    for (model, length), mine in sorted(sections.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        text = _section_heading(model, length, len(models) > 1, len(lengths) > 1) + leaderboard(mine)
        tag = prefix + (f"{_file_part(model)}_" if len(models) > 1 else "")
        tag += f"{length}_" if len(lengths) > 1 else ""
        trend = trend_section(mine)
        text += f"\n{trend}" if trend else ""
        for name, fn in (
            ("accuracy_vs_density", plot_accuracy_vs_density),
            ("error_per_layer", plot_error_per_layer),
            ("per_layer", plot_per_layer),
            ("per_head", plot_per_head),
        ):
            p = img / f"{tag}{name}.png"
            if fn(mine, p):
                written["plots"].append(str(p))
                rel = Path(p).resolve().relative_to(out.parent.resolve()) if _inside(p, out.parent) else p
                text += f"\n![{name}]({rel})\n"
        parts.append(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text((f"Made by `{command}`\n\n" if command else "") + "\n".join(parts))
    return written


def _section_heading(model: str | None, length: int, by_model: bool, by_length: bool) -> str:
    """``## smollm2, 4096 tokens`` (the parts that tell sections apart; none for one section)."""
    parts = ([model or "model not recorded"] if by_model else []) + (
        [f"{length} tokens"] if by_length else []
    )
    return f"## {', '.join(parts)}\n\n" if parts else ""


def _file_part(name: str | None) -> str:
    """A model name as part of a file name (a folder path keeps its last part)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(name)).name).strip("-") or "model"


def _inside(p: Path, root: Path) -> bool:
    try:
        Path(p).resolve().relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False


# ----- per layer and per head ---------------------------------------------------------------
#: The micro metrics drawn per layer and head: key, axis or colour-bar label, log scale.
LAYER_METRICS = (
    ("density", "measured density", False),
    ("rel_err", "relative output error", True),
    ("recall", "attention-mass recall", False),
)
#: Graphs whose heads are drawn first, when present (the methods of the published trend).
HEAD_GRAPHS = ("oracle_topk", "vattention", "quest", "streaming_llm")


@dataclass(frozen=True)
class Focus:
    """The cells the per-layer and per-head plots show: one context length, and per graph the
    cells of its setting whose target is nearest the chosen density (over that length's tasks)."""

    length: int
    by_graph: dict[str, list[dict]]


def focus_cells(cells: list[dict], density: float = 0.1, key: str = "per_layer") -> Focus | None:
    """The :class:`Focus` of ``cells`` on the longest context with ``key`` data (None without
    any): task cells only when there are some (perplexity calls score many queries at once)."""
    usable = [c for c in cells if c["status"] == "ok" and c.get(key) and c["graph"] != "dense"]
    tasks = [c for c in usable if c["kind"] != "perplexity"]
    usable = tasks or usable
    if not usable:
        return None
    length = max(c["length"] for c in usable)
    per_label: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for c in usable:
        if c["length"] == length:
            per_label[c["graph"]][c["label"]].append(c)
    by_graph = {}
    for graph in sorted(per_label, key=lambda g: _order_key("", g, None)):
        labels = per_label[graph]
        _label, group = min(labels.items(), key=lambda kv: abs((kv[1][0]["target"] or 1.0) - density))
        by_graph[graph] = group
    return Focus(length, by_graph)


def _layer_means(group: list[dict], metric: str) -> tuple[list[int], list[float | None]]:
    layers = sorted({int(k) for c in group for k in c["per_layer"]})
    return layers, [_mean([c["per_layer"].get(str(i), {}).get(metric) for c in group]) for i in layers]


def head_matrix(group: list[dict], metric: str):
    """(layers, heads) means of ``metric`` over the cells of ``group`` (NaN where a layer has
    none), from their ``per_head`` tables; None when no cell has the metric."""
    import numpy as np

    layers = sorted({int(k) for c in group for k in c.get("per_head") or {}})
    rows = []
    for layer in layers:
        vals = [
            c["per_head"][str(layer)][metric] for c in group if metric in c["per_head"].get(str(layer), {})
        ]
        rows.append(np.mean(np.asarray(vals, dtype=float), axis=0) if vals else None)
    width = max((len(r) for r in rows if r is not None), default=0)
    if not width:
        return None
    full = np.full((max(layers) + 1, width), np.nan)
    for layer, row in zip(layers, rows):
        if row is not None:
            full[layer] = row
    return full


def plot_per_layer(cells: list[dict], path: Path, density: float = 0.1) -> bool:
    """Measured density, relative output error and recall per layer (one panel each), one
    line per graph at the setting nearest ``density``, on the longest context measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    focus = focus_cells(cells, density)
    if focus is None:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), layout="constrained")
    for ax, (metric, name, log) in zip(axes, LAYER_METRICS):
        for graph, group in focus.by_graph.items():
            layers, ys = _layer_means(group, metric)
            if any(y is not None for y in ys):
                ys = [math.nan if y is None else y for y in ys]
                ax.plot(layers, ys, label=group[0]["label"], markersize=4, **_style(cells, graph))
        if log:
            _plain_log_axis(ax)
        else:
            ax.set_ylim(bottom=0)  # from zero: small differences between layers look as small as they are
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer")
        ax.set_ylabel(name)
        ax.set_title(f"{name} per layer")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = _legend_entries(axes)
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    fig.suptitle(f"Per layer at {focus.length} tokens (mean over heads, calls and tasks)")
    _save(fig, path)
    return True


def plot_per_head(cells: list[dict], path: Path, density: float = 0.1, graphs: int = 4) -> bool:
    """Heat maps (layer × query head) of measured density, relative output error (log colour
    scale) and recall, one row per graph (up to ``graphs``, those of :data:`HEAD_GRAPHS`
    first) at the setting nearest ``density``, on the longest context measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import MaxNLocator

    focus = focus_cells(cells, density, key="per_head")
    if focus is None:
        return False
    names = [g for g in HEAD_GRAPHS if g in focus.by_graph]
    names += [g for g in focus.by_graph if g not in names]
    names = names[:graphs]
    mats = {(g, m): head_matrix(focus.by_graph[g], m) for g in names for m, _, _ in LAYER_METRICS}
    metrics = [m for m in LAYER_METRICS if any(mats[(g, m[0])] is not None for g in names)]
    fig, axes = plt.subplots(
        len(names), len(metrics), figsize=(4.2 * len(metrics) + 1, 3.4 * len(names)),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    for col, (metric, name, log) in enumerate(metrics):
        present = [mats[(g, metric)] for g in names if mats[(g, metric)] is not None]
        values = np.concatenate([m[np.isfinite(m)] for m in present])
        if log:
            positive = values[values > 0]
            # the 2nd percentile: a few near-exact heads would squeeze every other colour together
            low = float(np.percentile(positive, 2)) if positive.size else 1e-6
            norm = LogNorm(vmin=low, vmax=max(float(values.max()), low * 10))
        else:
            norm = Normalize(vmin=float(values.min()), vmax=float(values.max()))
        image = None
        for row, graph in enumerate(names):
            ax = axes[row][col]
            mat = mats[(graph, metric)]
            if mat is None:
                ax.set_axis_off()
                continue
            shown = np.where(mat > 0, mat, np.nan) if log else mat
            image = ax.imshow(shown, aspect="auto", origin="lower", norm=norm, cmap="viridis")
            ax.set_title(f"{focus.by_graph[graph][0]['label']}: {name}", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("query head")
            ax.set_ylabel("layer")
        if image is not None:
            fig.colorbar(image, ax=[axes[r][col] for r in range(len(names))], shrink=0.8, label=name)
    fig.suptitle(f"Per layer and head at {focus.length} tokens (mean over calls and tasks)")
    _save(fig, path)
    return True


# ----- the published trend ------------------------------------------------------------------
#: The order the literature reports at equal density, best first; graphs of one tier are not
#: ordered among themselves.
TREND = (
    ("oracle_topk",),
    ("vattention",),
    ("quest", "hashattention", "double_sparsity"),
    ("streaming_llm",),
    ("random_sampling",),
)
#: Centres of the measured-density bins the trend is checked in.
TREND_BINS = (0.02, 0.05, 0.1, 0.2)


@dataclass(frozen=True)
class Pooled:
    """A setting's retrieval score pooled over tasks: mean (0–100) with its Wilson 95 %
    interval over all ``n`` samples, and the setting's measured density."""

    label: str
    density: float
    score: float
    low: float
    high: float
    n: int


def bin_edges(centres: tuple[float, ...] = TREND_BINS) -> list[tuple[float, float]]:
    """(low, high) of each centre's bin: the geometric midpoints between neighbours, the outer
    bins as wide (in log scale) on their open side."""
    mids = [math.sqrt(a * b) for a, b in zip(centres, centres[1:])]
    first = centres[0] * centres[0] / mids[0] if mids else centres[0] / 2
    last = centres[-1] * centres[-1] / mids[-1] if mids else centres[0] * 2
    lows, highs = [first, *mids], [*mids, last]
    return list(zip(lows, highs))


def pooled_score(cells: list[dict], tasks: set[str] | None = None) -> Pooled | None:
    """The per-sample scores of ``cells`` (one setting, one length) pooled over their tasks
    (only ``tasks`` when given), with the Wilson interval; None without samples."""
    from .runner import wilson95

    mine = [c for c in cells if c.get("scores") and (tasks is None or c["task"] in tasks)]
    scores = [s for c in mine for s in c["scores"]]
    if not scores:
        return None
    mean = sum(scores) / len(scores) / 100
    ci = wilson95(mean, len(scores))
    density = _mean([c.get("density") for c in mine]) or 0.0
    return Pooled(mine[0]["label"], density, 100 * mean, 100 * ci.low, 100 * ci.high, len(scores))


def _bin_settings(cells: list[dict], length: int, edges: tuple[float, float], centre: float):
    """Per trend graph, the retrieval cells of its setting at ``length`` whose measured density
    falls in ``edges`` (the one nearest ``centre`` in log scale when several do)."""
    out: dict[str, list[dict]] = {}
    for graph in (g for tier in TREND for g in tier):
        by_label: dict[str, list[dict]] = defaultdict(list)
        for c in cells:
            if (
                c["graph"] == graph and c["length"] == length and c["kind"] == "retrieval"
                and c["status"] == "ok" and c.get("scores") and c.get("density") is not None
            ):  # fmt: skip
                by_label[c["label"]].append(c)
        inside = {
            label: group
            for label, group in by_label.items()
            if edges[0] <= _mean([c["density"] for c in group]) < edges[1]
        }
        if inside:
            out[graph] = min(
                inside.values(), key=lambda g: abs(math.log(_mean([c["density"] for c in g]) / centre))
            )
    return out


def compare(left: list[dict], right: list[dict]) -> str:
    """``holds`` when the Wilson interval of ``left`` lies above that of ``right`` on the tasks
    both ran, ``reversed`` when it lies below, ``not enough data`` when they overlap or share
    no task."""
    common = {c["task"] for c in left} & {c["task"] for c in right}
    a, b = pooled_score(left, common), pooled_score(right, common)
    if a is None or b is None:
        return "not enough data"
    if a.low > b.high:
        return "holds"
    if b.low > a.high:
        return "reversed"
    return "not enough data"


def link_verdict(settings: dict[str, list[dict]], upper: tuple[str, ...], lower: tuple[str, ...]) -> str:
    """One link of :data:`TREND` (every graph of ``upper`` ≥ every graph of ``lower``):
    ``reversed`` if any pair is, ``holds`` if every pair has data and holds, else ``not enough
    data``."""
    verdicts = [
        compare(settings[a], settings[b]) if a in settings and b in settings else "not enough data"
        for a in upper
        for b in lower
    ]
    if "reversed" in verdicts:
        return "reversed"
    return "holds" if all(v == "holds" for v in verdicts) else "not enough data"


def _tier_name(tier: tuple[str, ...]) -> str:
    return "/".join(tier)


def trend_section(cells: list[dict]) -> str:
    """The markdown check of the published order (:data:`TREND`) on the retrieval tasks, per
    length and measured-density bin; empty without retrieval cells of the trend's graphs."""
    graphs = [g for tier in TREND for g in tier]
    if not any(c["kind"] == "retrieval" and c["graph"] in graphs for c in cells):
        return ""
    links = list(zip(TREND, TREND[1:]))
    head = ["length", "density bin", *graphs, *(f"{_tier_name(a)} ≥ {_tier_name(b)}" for a, b in links)]
    lines = [
        "### The published trend, checked",
        "",
        "Is the order " + " ≥ ".join(_tier_name(t) for t in TREND) + " kept at equal measured "
        "density? Each graph's setting whose measured density falls in the bin (the one nearest the "
        "bin's centre when several do) is scored on the retrieval tasks, its per-sample scores "
        "pooled over tasks, `score [Wilson 95 % interval] at measured density`. A link **holds** "
        "where every graph on its left has its interval above every graph on its right (over the "
        "tasks both ran), is **reversed** where one on the right lies above one on the left, and "
        "has **not enough data** where intervals overlap or a graph has no setting in the bin.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    counts: dict[str, int] = defaultdict(int)
    for length in sorted({c["length"] for c in cells if c["kind"] == "retrieval"}):
        for centre, edges in zip(TREND_BINS, bin_edges()):
            settings = _bin_settings(cells, length, edges, centre)
            if not settings:
                continue
            shown = []
            for g in graphs:
                p = pooled_score(settings[g]) if g in settings else None
                shown.append(
                    "–"
                    if p is None
                    else f"{p.score:.0f} [{p.low:.0f}–{p.high:.0f}] at {100 * p.density:.1f} %"
                )
            verdicts = [link_verdict(settings, a, b) for a, b in links]
            for v in verdicts:
                counts[v] += 1
            span = f"{100 * centre:g} % ({100 * edges[0]:.1f}–{100 * edges[1]:.1f} %)"
            lines.append("| " + " | ".join([str(length), span, *shown, *verdicts]) + " |")
    total = sum(counts.values())
    lines += [
        "",
        f"Over {total} links: holds in {counts['holds']}, reversed in {counts['reversed']}, "
        f"not enough data in {counts['not enough data']}.",
    ]
    return "\n".join(lines) + "\n"
