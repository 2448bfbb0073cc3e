"""`maskgraph bench` runs the benchmark scripts (tiny CPU shapes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maskgraph.cli import main


def test_bench_attention_quick_prints_a_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    args = ["--quick", "--graphs", "dense", "--no-eager", "--reps", "2", "--keys", "300", "--queries", "1"]
    assert main(["bench", "attention", *args]) == 0
    out = capsys.readouterr().out
    table = out.split("## attention per call")[-1]
    assert "| dense SDPA" in table and "| dense " in table
    assert (tmp_path / "attention.json").exists()


def test_bench_generate_quick_times_every_variant(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    args = ["bench", "generate", "--quick", "--graphs", "streaming_llm", "--tokens", "6"]
    assert main(args) == 0
    table = capsys.readouterr().out.split("## model.generate per token")[-1]
    for variant in (
        "sdpa [dynamic]",
        "sdpa [static]",
        "streaming_llm simulate [static]",
        "streaming_llm sparse [dynamic]",
    ):
        row = next(line for line in table.splitlines() if line.startswith(f"| {variant} "))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[-1] == "-", f"{variant} failed: {cells[-1]}"
        assert float(cells[4]) > 0  # ms per token
    assert (tmp_path / "generate.json").exists()


def test_bench_rejects_unknown_script(capsys):
    try:
        main(["bench", "nope"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_a_failing_case_is_one_line_without_debug(tmp_path, monkeypatch, capsys):
    """`dense` has no budget to set in sparse.py's cases: the case fails, its row says why, and
    stderr has one line for it, not a traceback (the traceback with --debug)."""
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setenv("MG_BENCH_TRACEBACKS", "")  # off; restored after the test
    assert main(["bench", "sparse", "--quick", "--graphs", "dense"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    failures = [line for line in captured.err.splitlines() if line.startswith("dense ")]
    assert failures and "Error" in failures[0]
    assert main(["--debug", "bench", "sparse", "--quick", "--graphs", "dense"]) == 0
    assert "Traceback" in capsys.readouterr().err


def test_every_bench_script_is_a_benchmark_of_the_repository():
    """`maskgraph bench NAME` runs benchmarks/NAME.py: each name it offers has its script, and
    every script but the shared helpers and the register report (no GPU, no table) is offered."""
    from maskgraph.cli.bench import SCRIPTS, scripts_dir

    folder = scripts_dir()
    on_disk = {p.stem for p in folder.glob("*.py")} - {"common", "registers"}
    assert set(SCRIPTS) == on_disk


def test_bench_attend_paths_quick_prints_a_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    assert main(["bench", "attend_paths", "--quick"]) == 0
    table = capsys.readouterr().out.split("## simulate pieces")[-1]
    assert "| sdpa (flash)" in table and "| mg.compile(dense)" in table
    assert (tmp_path / "attend_paths.json").exists()


@pytest.mark.slow  # compiles a sparse decode step per graph and density (minutes on 2 cores)
def test_bench_decode_graph_quick_steps_every_variant(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    assert main(["bench", "decode_graph", "--quick", "--graphs", "quest", "--densities", "0.1"]) == 0
    table = capsys.readouterr().out.split("## decode per token")[-1]
    rows = [line for line in table.splitlines() if line.startswith("| quest ")]
    assert rows
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[-1] == "-", f"quest failed: {cells[-1]}"
    assert (tmp_path / "decode_graph.json").exists()


# ----- benchmarks/sweeps.py: Ray sweeps, run on the CPU with slots standing in for GPUs ---------
ROOT = Path(__file__).resolve().parents[2]
SWEEPS = [sys.executable, "benchmarks/sweeps.py"]


@pytest.fixture
def one_ray_at_a_time(tmp_path_factory):
    """pytest-xdist's workers take turns with Ray (the lock of tests/eval/test_sweep.py)."""
    from filelock import FileLock

    with FileLock(str(tmp_path_factory.getbasetemp().parent / "maskgraph-ray.lock")):
        yield


def run_sweeps(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(tmp_path)}
    return subprocess.run(
        [*SWEEPS, *args, "--work", str(tmp_path / "work")], cwd=ROOT, env=env, capture_output=True, text=True
    )


def table_rows(stdout: str, title: str) -> dict[str, list[str]]:
    """First cell -> cells of the Markdown table printed after ``## title``."""
    table = stdout.split(f"## {title}")[-1]
    lines = [line for line in table.splitlines() if line.startswith("| ")][1:]
    return {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}


@pytest.mark.slow  # two local Ray clusters, eight trials each (about a minute and a half on 2 cores)
def test_bench_sweeps_fractions_quick_runs_both_variants(tmp_path, one_ray_at_a_time):
    pytest.importorskip("ray")
    got = run_sweeps(["fractions", "--quick"], tmp_path)
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-2000:]
    rows = table_rows(got.stdout, "Ray sweep, 4 trials x 0.25 GPU vs one at a time")
    assert set(rows) == {"4 at a time x 0.25 GPU", "one at a time (--workers 1)"}
    for cells in rows.values():
        assert cells[1] == "8" and cells[2] == "0" and float(cells[3]) > 0  # trials, failed, wall s
    assert "CPU slot(s) standing in for GPUs" in got.stdout and "PASS  same rows in both stores" in got.stdout
    data = json.loads((tmp_path / "sweeps_fractions.json").read_text())
    assert data["checks"] == {"every trial done": True, "same rows in both stores": True}
    assert data["rows_compared"]["rows"] == 64  # 2 graphs x 2 densities x 16 samples


@pytest.mark.slow  # four local Ray clusters and a killed actor (about two minutes on 2 cores)
def test_bench_sweeps_gpus_quick_checks_equal_rows_and_a_rerun_of_the_missing_pairs(
    tmp_path, one_ray_at_a_time
):
    pytest.importorskip("ray")
    got = run_sweeps(["gpus", "--quick"], tmp_path)
    assert got.returncode == 0, got.stdout[-2000:] + got.stderr[-2000:]
    rows = table_rows(got.stdout, "Ray sweep on 1 and 2 CPU slots")
    assert rows["1 GPU, 1 actor"][2] == "6" and rows["2 GPUs, one actor each"][2] == "6"
    assert float(rows["2 GPUs, one actor each"][6]) > 0  # scaling efficiency
    assert rows["2 actors, one killed"][3] == "1"  # one failed trial
    data = json.loads((tmp_path / "sweeps_gpus.json").read_text())
    assert data["checks"] and all(data["checks"].values()), data["checks"]
    assert len(data["checks"]) == 6
    rerun = data["phases"]["kill"]["rerun"]
    assert rerun["pairs_written"] == rerun["pairs_total"] - rerun["pairs_before"] > 0
    assert rerun["trials_rerun"] == 1 and rerun["finished_trials_untouched"]
    assert data["rows_compared"]["rows"] == 60 and data["rows_compared"]["differing"] == 0


def test_bench_sweeps_without_ray_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["bench", "sweeps", "gpus", "--quick"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        "benchmarks/sweeps.py needs Ray, which is not installed: pip install 'maskgraph[ray]'"
    ]


def test_bench_sweeps_fractions_model_replaces_the_files_models(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import sweeps

    args = sweeps.parser().parse_args(["fractions", "--model", "tiny-qwen2", "--work", str(tmp_path)])
    spec, text = sweeps.fractions_spec(args)
    assert spec.models == ("tiny-qwen2",) and "tiny-qwen2" in text and "smollm2" not in text
    assert spec.resources.num_gpus == 0.25 and len(spec.trials()) == 8  # the rest of the file is kept


def test_a_failed_cases_cell_says_what_went_wrong(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from common import error_cell

    assert error_cell(ValueError("k must be positive\ndetails")) == "ValueError: k must be positive"
    worker = "SubprocException: An exception occurred in a subprocess:\n\nName=gather\n"
    worker += (
        "CompilationError: at 12:4:\n    for blk in range(0, n):\n    ^\nAssertionError('types differ')\n"
    )
    assert error_cell(RuntimeError(worker)) == "RuntimeError: AssertionError('types differ')"
    assert error_cell(RuntimeError("failed:\nin the end")) == "RuntimeError: in the end"
    assert error_cell(KeyError("x" * 300), 10) == "KeyError: 'xxxxxxxxx"
    assert error_cell(RuntimeError()) == "RuntimeError: "
