"""The report's per-layer and per-head plots, the check of the published trend and the
agreement intervals, on small synthetic cells and a synthetic run folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from maskgraph.cli.main import main
from maskgraph.eval.report import (
    agreement_interval,
    bin_edges,
    compare,
    focus_cells,
    head_matrix,
    link_verdict,
    pooled_score,
    trend_section,
)
from maskgraph.eval.runner import wilson95

LAYERS, HEADS = 3, 4


def _micro(rng: np.random.Generator, density: float) -> tuple[dict, dict]:
    """per_layer and per_head tables of a cell (random values around ``density``)."""
    per_head = {
        str(layer): {
            "density": list(np.clip(density + 0.01 * rng.standard_normal(HEADS), 0.001, 1)),
            "rel_err": list(rng.uniform(0.01, 0.5, HEADS)),
            "recall": list(rng.uniform(0.5, 1.0, HEADS)),
        }
        for layer in range(LAYERS)
    }
    per_layer = {k: {n: float(np.mean(v)) for n, v in m.items()} for k, m in per_head.items()}
    return per_layer, per_head


def _cell(graph, target, task, length, scores, density, rng=None, agreements=None) -> dict:
    label = f"{graph}@{'default' if target is None else f'{target:.0%}'}"
    cell = dict(
        graph=graph, label=label, target=target, task=task, kind="retrieval", length=length,
        status="ok", samples=len(scores), density=density, scores=[float(s) for s in scores],
        score=float(np.mean(scores)), ref_score=100.0,
    )  # fmt: skip
    mean = float(np.mean(scores)) / 100
    ci = wilson95(mean, len(scores))
    cell.update(score_low=100 * ci.low, score_high=100 * ci.high)
    if agreements is not None:
        cell.update(agreements=agreements, agreement=float(np.mean(agreements)))
    if rng is not None:
        cell["per_layer"], cell["per_head"] = _micro(rng, density)
        cell["rel_err"] = float(np.mean([m["rel_err"] for m in cell["per_layer"].values()]))
    return cell


def test_head_matrix_is_the_mean_of_the_cells_heads():
    rng = np.random.default_rng(1)
    a = _cell("quest", 0.1, "t1", 512, [100] * 4, 0.1, rng)
    b = _cell("quest", 0.1, "t2", 512, [0] * 4, 0.1, rng)
    got = head_matrix([a, b], "rel_err")
    assert got.shape == (LAYERS, HEADS)
    for layer in range(LAYERS):
        want = [
            (a["per_head"][str(layer)]["rel_err"][h] + b["per_head"][str(layer)]["rel_err"][h]) / 2
            for h in range(HEADS)
        ]
        assert got[layer] == pytest.approx(want)
    assert head_matrix([{**a, "per_head": {"0": {"density": [0.5] * HEADS}}}], "rel_err") is None


def test_focus_takes_the_longest_context_and_the_setting_nearest_the_density():
    rng = np.random.default_rng(2)
    cells = [
        _cell("quest", 0.05, "t", 512, [100], 0.05, rng),
        _cell("quest", 0.2, "t", 512, [100], 0.2, rng),
        _cell("quest", 0.2, "t", 256, [100], 0.2, rng),
        _cell("oracle_topk", 0.05, "t", 512, [100], 0.05, rng),
        _cell("dense", None, "t", 512, [100], 1.0, rng),
    ]
    focus = focus_cells(cells, density=0.15)
    assert focus.length == 512
    assert list(focus.by_graph) == ["oracle_topk", "quest"]  # dense is the reference, not drawn
    assert [c["label"] for c in focus.by_graph["quest"]] == ["quest@20%"]
    assert focus_cells([{**c, "per_layer": None} for c in cells]) is None


def test_bin_edges_are_geometric_midpoints():
    edges = bin_edges((0.02, 0.05, 0.1, 0.2))
    assert edges[0] == pytest.approx((0.02 * 0.02 / math.sqrt(0.001), math.sqrt(0.001)))
    assert edges[1] == pytest.approx((math.sqrt(0.001), math.sqrt(0.005)))
    assert edges[3] == pytest.approx((math.sqrt(0.02), 0.2 * 0.2 / math.sqrt(0.02)))


def test_pooled_score_pools_samples_of_the_named_tasks():
    a = _cell("quest", 0.1, "t1", 512, [100, 100, 0, 100], 0.10)
    b = _cell("quest", 0.1, "t2", 512, [0, 0, 0, 0, 0, 0], 0.12)
    got = pooled_score([a, b])
    ci = wilson95(3 / 10, 10)
    assert (got.score, got.n) == (30.0, 10)
    assert (got.low, got.high) == (pytest.approx(100 * ci.low), pytest.approx(100 * ci.high))
    assert got.density == pytest.approx(0.11)
    assert pooled_score([a, b], {"t1"}).score == 75.0


def test_compare_says_holds_reversed_or_not_enough_data():
    high = [_cell("oracle_topk", 0.05, "t", 4096, [100] * 20, 0.05)]
    low = [_cell("streaming_llm", 0.05, "t", 4096, [0] * 20, 0.05)]
    mixed = [_cell("quest", 0.05, "t", 4096, [100] * 11 + [0] * 9, 0.05)]
    assert compare(high, low) == "holds"
    assert compare(low, high) == "reversed"
    assert compare(high, mixed) == "holds"  # 100 [83.9–100] above 55 [34.2–74.2]
    other_task = [_cell("streaming_llm", 0.05, "u", 4096, [0] * 20, 0.05)]
    assert compare(high, other_task) == "not enough data"  # no task in common


def test_compare_overlap_is_not_enough_data():
    a = [_cell("oracle_topk", 0.05, "t", 4096, [100] * 3 + [0], 0.05)]
    b = [_cell("vattention", 0.05, "t", 4096, [100] + [0] * 3, 0.05)]
    assert compare(a, b) == "not enough data"  # 75 [30–95] vs 25 [5–70]


def test_a_link_holds_only_when_every_pair_holds():
    top = _cell("vattention", 0.05, "t", 4096, [100] * 20, 0.05)
    good = _cell("quest", 0.05, "t", 4096, [0] * 20, 0.05)
    bad = _cell("hashattention", 0.05, "t", 4096, [100] * 20, 0.05)
    tier = ("quest", "hashattention")
    assert link_verdict({"vattention": [top], "quest": [good]}, ("vattention",), ("quest",)) == "holds"
    assert link_verdict({"vattention": [top], "quest": [good]}, ("vattention",), tier) == "not enough data"
    assert link_verdict({"vattention": [good], "quest": [top]}, ("vattention",), ("quest",)) == "reversed"
    both = {"vattention": [top], "quest": [good], "hashattention": [bad]}
    assert link_verdict(both, ("vattention",), tier) == "not enough data"


def test_trend_section_bins_by_measured_density():
    cells = []
    for graph, score in (
        ("oracle_topk", 100), ("vattention", 100), ("quest", 0), ("hashattention", 0),
        ("double_sparsity", 0), ("streaming_llm", 0), ("random_sampling", 0),
    ):  # fmt: skip
        # measured 5 % for all but vattention, which overshoots into the 20 % bin
        density = 0.21 if graph == "vattention" else 0.05
        cells.append(_cell(graph, 0.05, "t", 4096, [score] * 20, density))
    text = trend_section(cells)
    rows = [line for line in text.splitlines() if line.startswith("| 4096")]
    assert len(rows) == 2  # the 5 % bin and the 20 % bin
    five = rows[0].split(" | ")
    assert five[1].startswith("5 %") and five[3] == "–"  # vattention has no setting at 5 %
    assert five[-4:] == ["not enough data", "not enough data", "not enough data", "not enough data |"]
    assert "100 [84–100] at 5.0 %" in five[2]
    twenty = rows[1].split(" | ")
    assert twenty[3] == "100 [84–100] at 21.0 %"
    assert "Over 8 links: holds in 0, reversed in 0, not enough data in 8." in text
    assert trend_section([{**c, "kind": "perplexity"} for c in cells]) == ""


def test_trend_section_finds_the_order_where_it_holds():
    cells = [
        _cell("oracle_topk", 0.05, "t", 4096, [100] * 20, 0.05),
        _cell("vattention", 0.05, "t", 4096, [100] * 20, 0.05),
        _cell("streaming_llm", 0.05, "t", 4096, [0] * 20, 0.05),
        _cell("random_sampling", 0.05, "t", 4096, [100] * 20, 0.05),
    ]
    row = next(line for line in trend_section(cells).splitlines() if line.startswith("| 4096"))
    assert row.endswith("| not enough data | not enough data | not enough data | reversed |")


def test_agreement_interval_resamples_each_cell():
    a = _cell("quest", 0.1, "t1", 512, [100] * 4, 0.1, agreements=[1.0, 1.0, 0.0, 0.5])
    b = _cell("quest", 0.1, "t2", 512, [100] * 4, 0.1, agreements=[1.0, 1.0, 1.0, 1.0])
    low, high = agreement_interval([a, b])
    assert 0.5 <= low < (0.625 + 1.0) / 2 < high <= 1.0
    assert agreement_interval([b]) == (1.0, 1.0)
    assert agreement_interval([{**a, "agreements": [0.5]}]) is None  # one sample: no interval
    assert agreement_interval([{k: v for k, v in a.items() if k != "agreements"}]) is None


def test_report_of_a_synthetic_run_folder_draws_layers_heads_and_the_trend(tmp_path):
    rng = np.random.default_rng(5)
    cells = {}
    for graph in ("oracle_topk", "vattention", "quest", "streaming_llm", "random_sampling"):
        for target in (0.05, 0.2):
            c = _cell(
                graph,
                target,
                "niah_single_number",
                4096,
                [100, 0, 100, 100],
                target,
                rng,
                [1.0, 0.5, 1.0, 1.0],
            )
            cells[f"{c['label']}/{c['task']}/{c['length']}"] = c
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"cells": cells}))
    md = tmp_path / "report.md"
    assert main(["report", str(run), "--out", str(md), "--prefix", "long_"]) == 0
    text = md.read_text()
    assert "### The published trend, checked" in text and "| 4096 | 5 % (" in text
    assert "1.000 [" not in text and "0.875 [0.625–1.000]" in text  # agreement with its interval
    for name in ("per_layer", "per_head", "accuracy_vs_density", "error_per_layer"):
        png = tmp_path / f"long_{name}.png"
        assert png.stat().st_size > 5000, name
        assert f"({png.name})" in text


def test_each_context_length_gets_its_own_section_and_plots(tmp_path):
    rng = np.random.default_rng(6)
    cells = {}
    for length in (4096, 8000):
        for graph in ("oracle_topk", "streaming_llm"):
            c = _cell(graph, 0.05, "niah_single_number", length, [100, 0, 100], 0.05, rng)
            cells[f"{c['label']}/{c['task']}/{length}"] = c
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"cells": cells}))
    md = tmp_path / "report.md"
    assert main(["report", str(run), "--out", str(md)]) == 0
    text = md.read_text()
    first, second = text.index("## 4096 tokens"), text.index("## 8000 tokens")
    assert first < text.index("niah_single_number @4096") < second < text.index("niah_single_number @8000")
    assert "niah_single_number @8000" not in text[:second]
    for length in (4096, 8000):
        assert (tmp_path / f"{length}_per_head.png").is_file()
        assert (tmp_path / f"{length}_accuracy_vs_density.png").is_file()


def test_reference_row_and_perplexity_carry_intervals():
    from maskgraph.eval.report import leaderboard, ppl_interval

    few = _cell("quest", 0.05, "t", 4096, [100] * 4, 0.05)
    many = {**_cell("oracle_topk", 0.05, "t", 4096, [100] * 20, 0.05), "ref_score": 75.0}
    ci = wilson95(0.75, 20)
    text = leaderboard([few, many])
    reference = next(line for line in text.splitlines() if line.startswith("| dense (model's own attention)"))
    assert f"| 75.0 [{100 * ci.low:.1f}–{100 * ci.high:.1f}] |" in reference  # the cell with most samples
    nlls = [100.0, 110.0, 120.0, 130.0]
    cell = dict(
        graph="quest", label="quest@5%", target=0.05, task="ppl", kind="perplexity", length=8000,
        status="ok", samples=4, nlls=nlls, counts=[50] * 4, ref_ppl=8.0, density=0.05,
        ppl=math.exp(sum(nlls) / 200),
    )  # fmt: skip
    low, high = ppl_interval(cell)
    assert math.exp(100 / 50) <= low < cell["ppl"] < high <= math.exp(130 / 50)
    assert f"{cell['ppl']:.2f} [{low:.2f}–{high:.2f}]" in leaderboard([cell])
    assert ppl_interval({**cell, "nlls": [100.0], "counts": [50]}) is None


def test_the_dense_line_is_drawn_on_the_tasks_the_methods_ran():
    import matplotlib.pyplot as plt

    from maskgraph.eval.report import accuracy_figure

    solved = _cell("quest", 0.05, "niah_single_number", 4096, [100, 0, 100], 0.05)
    check = {**_cell("dense", None, "niah_single_word", 4096, [0, 0], 1.0), "ref_score": 0.0}
    fig = accuracy_figure([solved, check])
    dashed = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert [list(line.get_ydata()) for line in dashed] == [[100.0, 100.0]]
    plt.close(fig)
    # a kind that only the dense check ran gets no panel
    fig = accuracy_figure([solved, check, {**check, "task": "fwe", "kind": "aggregation"}])
    assert [ax.get_title() for ax in fig.axes] == ["Retrieval vs measured density"]
    plt.close(fig)
