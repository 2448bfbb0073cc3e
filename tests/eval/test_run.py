"""End to end on a tiny random model: run directory, resume, report, CLI."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import zlib

import pytest
import torch

from maskgraph.cli.main import main
from maskgraph.eval.runner import EvalConfig, agreement, run_eval
from maskgraph.hf.models import tiny_model


class WordTokenizer:
    """One token per whitespace-separated word, hashed into the tiny models' 256 ids."""

    eos_token_id = None

    def encode(self, text, add_special_tokens=False):
        return [zlib.crc32(w.encode()) % 256 for w in text.split()]

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"w{int(i)}" for i in ids)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama", seed=0), WordTokenizer()


@pytest.fixture()
def text_file(tmp_path):
    p = tmp_path / "book.txt"
    p.write_text("In the beginning was a long sentence about nothing much at all. " * 100)
    return str(p)


def _csv_without_timing(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _config(text_file, **kw):
    base = dict(
        model="tiny",
        graphs=["dense", "streaming_llm", "oracle_topk"],
        tasks=["niah_single_number", "fwe", "ppl"],
        lengths=[300],
        samples=1,
        seed=1,
        densities=[0.2],
        metrics=True,
        template="plain",
        text_file=text_file,
    )
    base.update(kw)
    return EvalConfig(**base)


def test_smoke_resume_and_report(tiny, text_file, tmp_path):
    model, tok = tiny
    out = tmp_path / "run"
    m1 = run_eval(_config(text_file), out, model=model, tokenizer=tok, progress=False)
    cells = m1["cells"]
    # dense has no knob: one setting; the others one per target density
    assert {c["label"] for c in cells.values()} == {"dense@default", "streaming_llm@20%", "oracle_topk@20%"}
    assert len(cells) == 3 * 3
    for c in cells.values():
        assert c["status"] == "ok" and c["samples"] == 1
        assert 0 < c["density"] <= 1 and c["rel_err"] is not None
    dense_ppl = cells["dense@default/ppl/300"]
    assert dense_ppl["ppl"] == pytest.approx(dense_ppl["ref_ppl"], rel=1e-3)
    assert cells["dense@default/fwe/300"]["agreement"] == 1.0
    assert cells["dense@default/fwe/300"]["density"] == pytest.approx(1.0)
    assert cells["dense@default/niah_single_number/300"]["rel_err"] < 1e-4
    assert cells["streaming_llm@20%/ppl/300"]["density"] < 0.5
    for name in (
        "config.json",
        "rows.jsonl",
        "reference.jsonl",
        "micro.jsonl",
        "results.csv",
        "metrics.json",
    ):
        assert (out / name).is_file()
    micro = [json.loads(x) for x in (out / "micro.jsonl").read_text().splitlines()]
    assert {r["layer"] for r in micro} == {0, 1} and all(len(r["density"]) == 4 for r in micro)

    table1 = (out / "metrics.json").read_text()
    csv1 = _csv_without_timing(out / "results.csv")
    n_rows = len((out / "rows.jsonl").read_text().splitlines())
    # a rerun finds everything done: same tables, no new rows
    run_eval(_config(text_file), out, model=None, tokenizer=None, progress=False)
    assert (out / "metrics.json").read_text() == table1
    assert len((out / "rows.jsonl").read_text().splitlines()) == n_rows
    # an interrupted run (last rows lost) resumes to the same table
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    rows = (resumed / "rows.jsonl").read_text().splitlines()
    (resumed / "rows.jsonl").write_text("\n".join(rows[:-4]) + "\n")
    cut = {json.loads(r)["cell"] for r in rows[-4:]}
    keep = [x for x in (resumed / "micro.jsonl").read_text().splitlines() if json.loads(x)["cell"] not in cut]
    (resumed / "micro.jsonl").write_text("\n".join(keep) + "\n")
    run_eval(_config(text_file), resumed, model=model, tokenizer=tok, progress=False)
    assert (resumed / "metrics.json").read_text() == table1
    assert _csv_without_timing(resumed / "results.csv") == csv1

    # a sample that ended in an error is rerun with retry_errors, and the newest row wins
    retried = tmp_path / "retried"
    shutil.copytree(out, retried)
    rows = [json.loads(r) for r in (retried / "rows.jsonl").read_text().splitlines()]
    victim = next(r for r in rows if r["cell"] == "oracle_topk@20%/ppl/300")
    rows.append({**victim, "status": "error: RuntimeError: boom", "score": None})
    (retried / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_eval(_config(text_file), retried, progress=False)["cells"][victim["cell"]][
        "status"
    ].startswith("error")
    run_eval(_config(text_file), retried, model=model, tokenizer=tok, progress=False, retry_errors=True)
    again = json.loads((retried / "metrics.json").read_text())["cells"][victim["cell"]]
    assert again["status"] == "ok" and again["ppl"] == pytest.approx(cells[victim["cell"]]["ppl"])

    md = tmp_path / "report" / "results.md"
    assert main(["report", str(out), "--out", str(md), "--prefix", "results_"]) == 0
    text = md.read_text()
    assert text.startswith(f"Made by `maskgraph report {out} --out {md} --prefix results_`\n")
    assert text.index("dense (model's own attention)") < text.index("| streaming_llm")
    assert "### Aggregation" in text and "### Retrieval" in text and "### Perplexity" in text
    assert (md.parent / "results_accuracy_vs_density.png").stat().st_size > 1000
    assert (md.parent / "results_error_per_layer.png").stat().st_size > 1000


def _report_cells() -> list[dict]:
    """Cells of twelve graphs (dense plus eleven methods at two densities) with per-sample data:
    a retrieval task and perplexity near 3.81, as in a real run."""
    gen = torch.Generator().manual_seed(3)
    graphs = ["dense", "streaming_llm", "oracle_topk", "oracle_topp", "quest", "pqcache", "hashattention"]
    graphs += ["double_sparsity", "socket", "random_sampling", "magicpig", "vattention"]
    cells = []
    for graph in graphs:
        for target in [None] if graph == "dense" else [0.05, 0.2]:
            label = f"{graph}@{'default' if target is None else f'{target:.0%}'}"
            density = 1.0 if target is None else target * (1 + 0.3 * float(torch.rand(1, generator=gen)))
            scores = [100.0 * float(x) for x in (torch.rand(4, generator=gen) > 0.3)]
            common = dict(graph=graph, label=label, target=target, length=1024, status="ok", density=density)
            cells.append(
                dict(
                    common,
                    task="niah",
                    kind="retrieval",
                    score=sum(scores) / 4,
                    scores=scores,
                    ref_score=75.0,
                )
            )
            nlls = [255 * (1.337 + 0.01 * float(x)) for x in torch.rand(3, generator=gen)]
            ppl = math.exp(sum(nlls) / 765)
            cells.append(
                dict(
                    common, task="ppl", kind="perplexity", ppl=ppl, nlls=nlls, counts=[255] * 3, ref_ppl=3.81
                )
            )
    return cells


def test_accuracy_figure_reads_plainly():
    """Scores on 0–100, density ticks as plain percentages, a colour and marker of its own per
    method (dense is the reference line, not a method), error bars, and a perplexity axis that
    spans at least a tenth of the dense perplexity."""
    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer

    from maskgraph.eval.report import accuracy_figure

    cells = _report_cells()
    fig = accuracy_figure(cells)
    fig.canvas.draw()
    score_ax, ppl_ax = fig.axes
    assert score_ax.get_ylim() == (-4, 104)
    for ax in (score_ax, ppl_ax):
        ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert ticks and all(re.fullmatch(r"[0-9.]+ %", t) for t in ticks), ticks
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(bars) == 11  # the methods; dense is the dashed line
        styles = {(tuple(c.lines[0].get_color()), c.lines[0].get_marker()) for c in bars}
        assert len({s[0] for s in styles}) == 11 and len({s[1] for s in styles}) == 11
        assert all(c.has_yerr for c in bars)
        assert any(line.get_linestyle() == "--" for line in ax.get_lines())
    low, high = ppl_ax.get_ylim()
    assert high - low >= 0.1 * 3.81
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0] == "dense attention" and "dense" not in legend[1:] and len(legend) == 12
    plt.close(fig)


def test_uncalibrated_graph_is_marked_not_skipped(tiny, text_file, tmp_path):
    model, tok = tiny
    m = run_eval(
        _config(text_file, graphs=["hashattention"], tasks=["ppl"], densities=[], metrics=False),
        tmp_path / "r",
        model=model,
        tokenizer=tok,
        progress=False,
    )
    (cell,) = m["cells"].values()
    assert cell["status"].startswith("not calibrated") and cell["samples"] == 0


def test_changed_identity_refuses_resume(tiny, text_file, tmp_path):
    model, tok = tiny
    cfg = _config(text_file, graphs=["dense"], tasks=["ppl"], samples=1, densities=[])
    run_eval(cfg, tmp_path / "r", model=model, tokenizer=tok, progress=False)
    from maskgraph.errors import MaskgraphError

    with pytest.raises(MaskgraphError, match="seed"):
        run_eval(
            _config(text_file, graphs=["dense"], tasks=["ppl"], samples=1, seed=9),
            tmp_path / "r",
            model=model,
            tokenizer=tok,
        )


def test_agreement():
    assert agreement([1, 2, 3], [1, 2, 3]) == 1.0
    assert agreement([1, 9, 3], [1, 2, 3, 4]) == 0.5
    assert agreement([], [1, 2]) == 0.0


def test_cli_help():
    with pytest.raises(SystemExit) as e:
        main(["eval", "--help"])
    assert e.value.code == 0


def test_sparse_protocol_sends_the_context_through_the_graph(tiny, text_file, tmp_path):
    model, tok = tiny
    cfg = _config(text_file, graphs=["streaming_llm"], tasks=["ppl", "niah_single_number"], protocol="sparse")
    m = run_eval(cfg, tmp_path / "s", model=model, tokenizer=tok, progress=False)
    assert all(c["status"] == "ok" for c in m["cells"].values())
    micro = [json.loads(x) for x in (tmp_path / "s" / "micro.jsonl").read_text().splitlines()]
    ppl_calls = [r for r in micro if r["cell"].endswith("/ppl/300")]
    assert {r["Q"] for r in ppl_calls} == {300}  # the whole window, context included
    niah_q = max(r["Q"] for r in micro if "/niah_single_number/" in r["cell"])
    assert niah_q > 200  # the context prefill went through the graph
    dense_prefill = run_eval(
        _config(text_file, graphs=["streaming_llm"], tasks=["ppl"]),
        tmp_path / "d",
        model=model,
        tokenizer=tok,
        progress=False,
    )
    assert dense_prefill["cells"]["streaming_llm@20%/ppl/300"]["ppl"] != pytest.approx(
        m["cells"]["streaming_llm@20%/ppl/300"]["ppl"], rel=1e-6
    )


def test_wilson_interval_against_hand_computed_bounds():
    from maskgraph.eval.runner import wilson95

    # 3 of 4: centre (0.75 + z²/8) / (1 + z²/4), half-width z/(1 + z²/4)·sqrt(0.75·0.25/4 + z²/64)
    got = wilson95(0.75, 4)
    assert (got.low, got.high) == (pytest.approx(0.300642, abs=1e-6), pytest.approx(0.954413, abs=1e-6))
    # 0 of 10 and 10 of 10: the bound at the edge stays at the edge
    none, every = wilson95(0.0, 10), wilson95(1.0, 10)
    assert (none.low, none.high) == pytest.approx((0.0, 0.277533), abs=1e-6)
    assert (every.low, every.high) == pytest.approx((0.722467, 1.0), abs=1e-6)


def test_a_score_cell_holds_its_wilson_interval_and_the_report_shows_it():
    from maskgraph.eval.report import leaderboard
    from maskgraph.eval.runner import _aggregate

    row = dict(graph="quest", label="quest@20%", target=0.2, task="niah_single_number", kind="retrieval")
    row |= dict(length=64, overrides={}, status="ok", ref_score=1.0, agreement=1.0)
    rows = [{**row, "score": s} for s in (1.0, 1.0, 0.0, 1.0)]
    cell = _aggregate(rows, [])
    assert cell["score"] == 75.0 and "score_ci95" not in cell
    assert cell["score_low"] == pytest.approx(30.0642, abs=1e-4)
    assert cell["score_high"] == pytest.approx(95.4413, abs=1e-4)
    assert "| 75.0 [30.1–95.4] |" in leaderboard([cell])


@pytest.mark.parametrize("share, scored", [(0.125, 7), (0.5, 31)])
def test_ppl_score_share_sets_the_tokens_scored_through_the_graph(tiny, text_file, tmp_path, share, scored):
    """A window of 64 tokens: the last ``share`` of it goes through the graph, the rest is the
    dense context; the first of those tokens predicts the second, so ``share·64 − 1`` are scored."""
    import argparse

    from maskgraph.cli import eval as eval_cli

    model, tok = tiny
    config = _config(text_file, graphs=["oracle_topk"], tasks=["ppl"], lengths=[64], ppl_score_share=share)
    cells = run_eval(config, tmp_path / "run", model=model, tokenizer=tok, progress=False)["cells"]
    rows = [json.loads(x) for x in (tmp_path / "run" / "rows.jsonl").read_text().splitlines()]
    assert [r["count"] for r in rows] == [scored]
    micro = [json.loads(x) for x in (tmp_path / "run" / "micro.jsonl").read_text().splitlines()]
    assert {r["Q"] for r in micro} == {int(64 * share)} and {r["K"] for r in micro} == {64}
    assert cells["oracle_topk@20%/ppl/64"]["status"] == "ok"
    sub = argparse.ArgumentParser().add_subparsers()
    args = eval_cli.add_parser(sub).parse_args(
        ["--graph", "quest", "--out", "x", "--ppl-score-share", str(share)]
    )
    assert args.ppl_score_share == share


def test_a_graph_of_fresh_randomness_gives_rows_that_do_not_depend_on_what_ran_before(
    tiny, text_file, tmp_path
):
    """random_sampling with ``seed: null`` draws from torch's global generator; each (cell,
    sample) seeds it from the run's seed, the cell and the sample, so two runs whose generator
    stood elsewhere before give equal rows, and the caller's generator is left as it was."""
    model, tok = tiny
    config = _config(text_file, graphs=["random_sampling"], tasks=["ppl"], samples=2, densities=[0.3])
    rows = {}
    for before in (1, 2):
        torch.manual_seed(before)
        run_eval(config, tmp_path / f"after-{before}", model=model, tokenizer=tok, progress=False)
        assert torch.rand(()) == torch.rand((), generator=torch.Generator().manual_seed(before))
        rows[before] = [
            {k: r[k] for k in ("cell", "index", "density", "rel_err", "score")}
            for r in map(json.loads, (tmp_path / f"after-{before}" / "rows.jsonl").read_text().splitlines())
        ]
    assert rows[1] == rows[2]
    assert rows[1][0]["rel_err"] != rows[1][1]["rel_err"]  # the two samples drew differently
