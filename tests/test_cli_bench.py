"""`maskgraph bench` runs the benchmark scripts (tiny CPU shapes)."""

from __future__ import annotations

from maskgraph.cli import main


def test_bench_attention_quick_prints_a_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    assert main(["bench", "attention", "--quick", "--graphs", "dense", "--no-eager", "--reps", "2"]) == 0
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
