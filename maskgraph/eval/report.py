"""``maskgraph report``: a markdown leaderboard and PNG plots from one or more run directories.

Tables (one row per graph setting, the plain dense model first, then ``dense``):

- retrieval tasks (needles, variable tracking): RULER score (0–100) per task and length;
- aggregation tasks (common/frequent-word extraction), reported separately;
- perplexity on long text, and its ratio to dense;
- for every row: the **measured** density (mean over its attention calls), agreement of
  greedy tokens with dense, and (runs with ``--metrics``) relative output error and recall.

The *setting* column is the part of a row's label after ``@``: a target density (``5%``), a
sweep's grid point (``heavy_size=0.05``) or ``default``.

Plots: ``<prefix>accuracy_vs_density.png`` (mean retrieval score against measured density, one
line per method: a Pareto view; bars: 95% normal-approximation intervals over samples) and
``<prefix>error_per_layer.png`` (relative output error per layer, one line per method at the
setting nearest a chosen density).

A sweep folder (``maskgraph sweep``) is read like a run; with several models, the report has one
section per model and its plots are named ``<prefix><model>_*.png``.
"""

from __future__ import annotations

import math
from collections import defaultdict
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
    """The model of an eval run folder (its config.json), or None where it cannot be read
    (the report then shows the run without a model name)."""
    from .rundir import RunDir

    try:
        config = RunDir(folder, ppl_task="ppl").read_config()
    except MaskgraphError:
        return None
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


def leaderboard(cells: list[dict]) -> str:
    """The markdown tables (see module docstring)."""
    by = {(c["label"], c["task"], c["length"]): c for c in cells}
    rows = _rows(cells)
    parts: list[str] = []
    for kind, title in (
        ("retrieval", "Retrieval (RULER score, 0–100)"),
        ("aggregation", "Aggregation (RULER score, 0–100)"),
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
    }


def _score_table(title: str, cols, rows, by) -> str:
    head = ["graph", "setting", "measured density"] + [f"{t} @{n}" for t, n in cols]
    head += ["mean", "agreement", "rel. err", "recall", "samples"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = [
        _mean([by[k]["ref_score"] for k in by if (k[1], k[2]) == col and "ref_score" in by[k]])
        for col in cols
    ]
    lines.append(
        "| "
        + " | ".join(
            [REFERENCE, "–", "1.000"] + [_fmt(v) for v in ref] + [_fmt(_mean(ref)), "1.000", "0", "1", "–"]
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
                [graph, _setting(label, target), _fmt(st["density"], ".3f")]
                + [_cell_text(c, "score", ".1f") for c in mine]
                + [
                    _fmt(_mean(scores)),
                    _fmt(st["agreement"], ".3f"),
                    _fmt(st["rel_err"], ".3f"),
                    _fmt(st["recall"], ".3f"),
                    _samples(mine),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _ppl_table(lengths, rows, by) -> str:
    head = (
        ["graph", "setting", "measured density"]
        + [f"ppl @{n}" for n in lengths]
        + [f"ratio to dense @{n}" for n in lengths]
    )
    lines = ["### Perplexity (long text)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = [_mean([by[k].get("ref_ppl") for k in by if k[1] == "ppl" and k[2] == n]) for n in lengths]
    lines.append(
        "| "
        + " | ".join([REFERENCE, "–", "1.000"] + [_fmt(v, ".2f") for v in ref] + ["1.00"] * len(lengths))
        + " |"
    )
    for label, graph, target in rows:
        mine = [by.get((label, "ppl", n)) for n in lengths]
        if all(c is None for c in mine):
            continue
        dens = _mean([c.get("density") for c in mine if c and c["status"] == "ok"])
        ratios = [
            _fmt(c["ppl"] / r, ".2f") if c and c.get("ppl") is not None and r else _cell_text(c, "ppl", ".2f")
            for c, r in zip(mine, ref)
        ]
        lines.append(
            "| "
            + " | ".join(
                [graph, _setting(label, target), _fmt(dens, ".3f")]
                + [_cell_text(c, "ppl", ".2f") for c in mine]
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
def plot_accuracy_vs_density(cells: list[dict], path: Path) -> bool:
    """Mean score (retrieval, aggregation) and perplexity against measured density, one panel
    each, one line per graph. False if there is no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("retrieval", "score", "ref_score", "mean retrieval score (RULER, 0–100)", "Retrieval"),
        ("aggregation", "score", "ref_score", "mean aggregation score (RULER, 0–100)", "Aggregation"),
        ("perplexity", "ppl", "ref_ppl", "perplexity (lower is better)", "Perplexity"),
    ]
    panels = [p for p in panels if any(c["kind"] == p[0] and c["status"] == "ok" for c in cells)]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (kind, key, ref_key, ylabel, title) in zip(axes[0], panels):
        _density_panel(ax, cells, kind, key, ref_key)
        ax.set_xscale("log")
        if kind == "perplexity":
            from matplotlib.ticker import ScalarFormatter

            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.set_xlabel("measured density (share of allowed keys attended)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} vs measured density")
        _finish_axes(ax)
    _save(fig, path)
    return True


def _finish_axes(ax) -> None:
    """Grid and a compact legend, the same in every plot."""
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def _save(fig, path) -> None:
    """Write ``fig`` as PNG to ``path`` and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _colour(cells: list[dict], graph: str):
    """The same colour for a graph in every panel and plot."""
    import matplotlib

    names = sorted({c["graph"] for c in cells})
    return matplotlib.colormaps["tab20"](names.index(graph) % 20)


def _density_panel(ax, cells: list[dict], kind: str, key: str, ref_key: str) -> None:
    """One line per graph: mean ``key`` of its ``kind`` cells against measured density."""
    points: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for label, graph, _ in _rows(cells):
        mine = [c for c in cells if c["label"] == label and c["kind"] == kind and c["status"] == "ok"]
        d, v = _mean([c.get("density") for c in mine]), _mean([c.get(key) for c in mine])
        if d is not None and v is not None:
            points[graph].append((d, v, _ci_of_mean([c.get(f"{key}_ci95") for c in mine])))
    for graph, pts in sorted(points.items()):
        pts.sort()
        ax.errorbar(
            [p[0] for p in pts],
            [p[1] for p in pts],
            yerr=[p[2] for p in pts],
            marker="o",
            capsize=3,
            label=graph,
            color=_colour(cells, graph),
        )
    refs = [c[ref_key] for c in cells if c["kind"] == kind and c.get(ref_key) is not None]
    if refs:
        ax.axhline(sum(refs) / len(refs), color="black", linestyle="--", linewidth=1, label="dense (model)")


def _ci_of_mean(half_widths: list[float | None]) -> float:
    """Half-width of the 95% interval of the mean of independent cell means whose own
    half-widths are given (0 where a cell has none: fewer than two samples)."""
    hw = [h or 0.0 for h in half_widths]
    return math.sqrt(sum(h * h for h in hw)) / len(hw) if hw else 0.0


def plot_error_per_layer(cells: list[dict], path: Path, density: float = 0.1) -> bool:
    """Relative output error per layer, one line per graph at its target nearest ``density``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_graph: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for c in cells:
        if c["status"] == "ok" and c.get("per_layer") and c.get("rel_err") is not None:
            per_graph[c["graph"]][c["label"]].append(c)
    if not per_graph:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for _graph, labels in sorted(per_graph.items()):
        label, group = min(labels.items(), key=lambda kv: abs((kv[1][0]["target"] or 1.0) - density))
        layers = sorted({int(k) for c in group for k in c["per_layer"]})
        ys = [_mean([c["per_layer"].get(str(i), {}).get("rel_err") for c in group]) for i in layers]
        ax.plot(layers, ys, marker=".", label=label, color=_colour(cells, group[0]["graph"]))
    ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("relative output error ‖O−O_dense‖/‖O_dense‖")
    ax.set_title(f"Output error per layer (per graph, the setting whose target is nearest {density:.0%})")
    _finish_axes(ax)
    _save(fig, path)
    return True


def write_report(
    run_dirs: list[str | Path], out: str | Path, img_dir: str | Path | None = None, prefix: str = ""
) -> dict:
    """Write the leaderboard markdown to ``out`` and plots to ``img_dir``; returns paths written."""
    cells = load_cells(run_dirs)
    out = Path(out)
    img = Path(img_dir) if img_dir is not None else out.parent
    img.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"markdown": str(out), "plots": []}
    by_model: dict[str | None, list[dict]] = defaultdict(list)
    for c in cells:
        by_model[c.get("model")].append(c)
    several = len(by_model) > 1
    parts = []
    for model, mine in sorted(by_model.items(), key=lambda kv: str(kv[0])):
        text = (f"## {model or 'model not recorded'}\n\n" if several else "") + leaderboard(mine)
        tag = f"{prefix}{_file_part(model)}_" if several else prefix
        for name, fn in (
            ("accuracy_vs_density", plot_accuracy_vs_density),
            ("error_per_layer", plot_error_per_layer),
        ):
            p = img / f"{tag}{name}.png"
            if fn(mine, p):
                written["plots"].append(str(p))
                rel = Path(p).resolve().relative_to(out.parent.resolve()) if _inside(p, out.parent) else p
                text += f"\n![{name}]({rel})\n"
        parts.append(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts))
    return written


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
