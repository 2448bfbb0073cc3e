"""`maskgraph bench` runs the benchmark scripts (tiny CPU shapes)."""

from __future__ import annotations

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
