"""Adversarial run folders for ``maskgraph eval`` (and output paths for ``calibrate``): a resume
never blends two settings into one cell, a folder that is not a run is never written into, a
malformed file is a one-line error naming it, and an unwritable output is refused before work.

Every CLI case goes through ``maskgraph.cli.main.main`` and checks the return code and stderr.
"""

from __future__ import annotations

import datetime
import json

import pytest
import yaml
from test_run import WordTokenizer

from maskgraph.cli.main import main
from maskgraph.errors import MaskgraphError
from maskgraph.eval.runner import EvalConfig, run_eval
from maskgraph.hf.models import tiny_model
from maskgraph.loader import load_graph

LENGTH = 64


@pytest.fixture()
def text_file(tmp_path):
    p = tmp_path / "book.txt"
    p.write_text("In the beginning was a long sentence about nothing much at all. " * 40)
    return str(p)


@pytest.fixture()
def loads(monkeypatch):
    """``eval --model tiny`` gets a tiny random model; the list records every load."""
    from maskgraph.cli import eval as eval_cli_module

    calls: list[str] = []
    check_model_name = eval_cli_module.check_model_name

    def load_model(name, device="cpu", **_):
        calls.append(name)
        return tiny_model("llama", seed=0), WordTokenizer()

    def check_name(name, **kwargs):
        if name != "tiny":
            check_model_name(name, **kwargs)

    import maskgraph.hf.models as models

    model_config = models.model_config

    def config(name):
        return model_config("tiny-llama" if name == "tiny" else name)

    monkeypatch.setattr("maskgraph.hf.models.load_model", load_model)
    monkeypatch.setattr("maskgraph.hf.models.model_config", config)
    monkeypatch.setattr(eval_cli_module, "check_model_name", check_name)
    return calls


def eval_cli(out, text_file, *extra, graphs=("streaming_llm",), samples=2) -> list[str]:
    return [
        "eval", "--model", "tiny", "--graph", *graphs, "--task", "ppl", "--lengths", str(LENGTH),
        "--samples", str(samples), "--seed", "1", "--template", "plain", "--text-file", text_file,
        "--no-progress", "--out", str(out), *extra,
    ]  # fmt: skip


def run_cli(argv, capsys) -> tuple[int, str]:
    """Return code and stderr of ``maskgraph ARGV``; the error, if any, is one line."""
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if rc != 0:
        assert len(err.strip().splitlines()) == 1, err
    return rc, err


def lines(path) -> list[str]:
    return path.read_text().splitlines()


# ----- 1. a resume with other settings is refused; the same settings reuse finished samples ------
def test_resume_with_another_override_is_refused(tmp_path, text_file, loads, capsys):
    out = tmp_path / "run"
    assert run_cli(eval_cli(out, text_file, "-p", "window_size=16"), capsys)[0] == 0
    config, rows = (out / "config.json").read_text(), (out / "rows.jsonl").read_text()

    rc, err = run_cli(eval_cli(out, text_file, "-p", "window_size=200"), capsys)
    assert rc == 1
    assert str(out) in err and "overrides" in err and "16" in err and "200" in err and "--out" in err
    assert (out / "config.json").read_text() == config and (out / "rows.jsonl").read_text() == rows

    # without the override is another setting as well
    assert run_cli(eval_cli(out, text_file), capsys)[0] == 1
    assert (out / "rows.jsonl").read_text() == rows


def test_resume_with_the_same_settings_reuses_and_extends(tmp_path, text_file, loads, capsys):
    out = tmp_path / "run"
    assert run_cli(eval_cli(out, text_file, "-p", "window_size=16", samples=1), capsys)[0] == 0
    first = lines(out / "rows.jsonl")
    assert len(first) == 1 and len(loads) == 1
    # nothing left to do: no model load, no new row
    assert run_cli(eval_cli(out, text_file, "-p", "window_size=16", samples=1), capsys)[0] == 0
    assert lines(out / "rows.jsonl") == first and len(loads) == 1
    # one more sample and one more graph: only those run, the finished row is kept
    argv = eval_cli(out, text_file, "-p", "window_size=16", graphs=("streaming_llm", "dense"), samples=2)
    assert run_cli(argv, capsys)[0] == 0
    rows = [json.loads(x) for x in lines(out / "rows.jsonl")]
    assert lines(out / "rows.jsonl")[0] == first[0]
    assert sorted((r["label"], r["index"]) for r in rows) == [
        ("dense@default", 0), ("dense@default", 1), ("streaming_llm@default", 0), ("streaming_llm@default", 1),
    ]  # fmt: skip
    cells = json.loads((out / "metrics.json").read_text())["cells"]
    assert cells[f"streaming_llm@default/ppl/{LENGTH}"]["overrides"] == {"window_size": 16}
    assert json.loads((out / "config.json").read_text())["samples"] == 2


def test_a_graph_file_edited_between_runs_is_refused(tmp_path, text_file, loads, capsys):
    path = tmp_path / "mine.yaml"
    data = load_graph("streaming_llm").to_dict()
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    assert run_cli(eval_cli(out, text_file, graphs=(str(path),)), capsys)[0] == 0
    rows = (out / "rows.jsonl").read_text()
    data["params"]["window_size"] = data["params"]["window_size"] + 7
    path.write_text(yaml.safe_dump(data))
    rc, err = run_cli(eval_cli(out, text_file, graphs=(str(path),)), capsys)
    assert rc == 1 and "graph 'streaming_llm'" in err and str(path) in err
    assert (out / "rows.jsonl").read_text() == rows


def test_rows_of_another_setting_left_by_an_older_run_are_refused(tmp_path, text_file, loads, capsys):
    """The state the blending bug left behind: rows made with window_size=16, a config.json
    without the override, rows without a graph fingerprint. Resuming without the override
    must not count the old rows as its own."""
    out = tmp_path / "run"
    assert run_cli(eval_cli(out, text_file, "-p", "window_size=16"), capsys)[0] == 0
    config = json.loads((out / "config.json").read_text())
    config["overrides"] = {}
    (out / "config.json").write_text(json.dumps(config))
    rows = [json.loads(x) for x in lines(out / "rows.jsonl")]
    (out / "rows.jsonl").write_text("".join(json.dumps({**r, "graph_sha": None}) + "\n" for r in rows))
    rc, err = run_cli(eval_cli(out, text_file), capsys)
    assert rc == 1 and f"streaming_llm@default/ppl/{LENGTH}" in err and "window_size" in err


def test_two_graph_files_with_one_name_are_refused(tmp_path, text_file):
    data = load_graph("streaming_llm").to_dict()
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump(data))
    data["params"]["window_size"] += 7
    b.write_text(yaml.safe_dump(data))
    config = EvalConfig(model="tiny", graphs=[str(a), str(b)], tasks=["ppl"], lengths=[LENGTH], samples=1)
    with pytest.raises(MaskgraphError, match="both named 'streaming_llm'"):
        run_eval(
            config, tmp_path / "run", model=tiny_model("llama"), tokenizer=WordTokenizer(), progress=False
        )
    assert not (tmp_path / "run").exists()


def test_an_override_that_is_not_plain_data_is_refused(tmp_path, text_file, loads, capsys):
    rc, err = run_cli(eval_cli(tmp_path / "run", text_file, "-p", "window_size=2024-01-01"), capsys)
    assert rc == 1 and "window_size" in err
    config = EvalConfig(
        model="tiny", graphs=["streaming_llm"], tasks=["ppl"], lengths=[LENGTH],
        overrides={"window_size": datetime.date(2024, 1, 1)},
    )  # fmt: skip
    with pytest.raises(MaskgraphError, match="not plain data"):
        run_eval(config, tmp_path / "api", model=tiny_model("llama"), tokenizer=WordTokenizer())


# ----- 2. folders that are not runs, malformed files, a write cut by a kill -----------------------
def test_a_folder_that_is_not_a_run_is_not_written(tmp_path, text_file, loads, capsys):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "results.csv").write_text("precious\n")
    rc, err = run_cli(eval_cli(out, text_file), capsys)
    assert rc == 1 and "not a maskgraph run" in err and "results.csv" in err
    assert sorted(p.name for p in out.iterdir()) == ["results.csv"]
    assert (out / "results.csv").read_text() == "precious\n" and loads == []


@pytest.fixture()
def finished(tmp_path, text_file, loads, capsys):
    """A finished run: dense and streaming_llm, 2 samples each (4 rows)."""
    out = tmp_path / "run"
    argv = eval_cli(out, text_file, "--metrics", graphs=("dense", "streaming_llm"), samples=2)
    assert run_cli(argv, capsys)[0] == 0
    assert len(lines(out / "rows.jsonl")) == 4
    return out, argv


def _edit_config(data: dict, how: str) -> str:
    if how == "truncated":
        return json.dumps(data)[:50]
    if how == "not an object":
        return "[1, 2]"
    if how == "missing key":
        return json.dumps({k: v for k, v in data.items() if k != "model"})
    return json.dumps({**data, "seed": "one"})  # wrong type


@pytest.mark.parametrize(
    "how, message",
    [
        ("truncated", "not valid JSON"),
        ("not an object", "expected a JSON object"),
        ("missing key", "missing key 'model'"),
        ("wrong type", "'seed' must be an integer"),
    ],
)
def test_a_malformed_config_is_a_named_error(finished, capsys, how, message):
    out, argv = finished
    path = out / "config.json"
    path.write_text(_edit_config(json.loads(path.read_text()), how))
    rc, err = run_cli(argv, capsys)
    assert rc == 1 and f"{path}" in err and message in err


def _edit_row(line: str, how: str) -> str:
    row = json.loads(line)
    if how == "truncated":
        return line[: len(line) // 2]
    if how == "missing key":
        return json.dumps({k: v for k, v in row.items() if k != "status"})
    if how == "wrong type":
        return json.dumps({**row, "index": "x"})
    return json.dumps({**row, "score": None})  # a finished sample without its score


@pytest.mark.parametrize(
    "how, message",
    [
        ("truncated", "not valid JSON"),
        ("missing key", "missing key 'status'"),
        ("wrong type", "'index' must be an integer"),
        ("missing score", "'score' must be a number"),
    ],
)
def test_a_malformed_row_in_the_middle_is_a_named_error(finished, capsys, loads, how, message):
    out, argv = finished
    path = out / "rows.jsonl"
    rows = lines(path)
    rows[1] = _edit_row(rows[1], how)
    path.write_text("\n".join(rows) + "\n")
    before = path.read_text()
    rc, err = run_cli(argv, capsys)
    assert rc == 1 and f"{path}:2:" in err and message in err
    assert path.read_text() == before and len(loads) == 1  # nothing reran


@pytest.mark.parametrize("log", ["rows.jsonl", "micro.jsonl"])
def test_a_last_line_cut_by_a_kill_is_dropped_and_its_sample_reruns(finished, capsys, log):
    out, argv = finished
    metrics = (out / "metrics.json").read_text()
    path = out / log
    text = path.read_text()
    path.write_text(text[: len(text) - len(lines(path)[-1]) // 2 - 1])  # half the last line, no line end
    if log == "micro.jsonl":  # the kill came before the row was written
        path_rows = out / "rows.jsonl"
        path_rows.write_text("\n".join(lines(path_rows)[:-1]) + "\n")
    cut = path.read_bytes()
    assert run_cli([*argv, "--seed", "2"], capsys)[0] == 1  # a refused rerun changes nothing
    assert path.read_bytes() == cut
    assert run_cli(argv, capsys)[0] == 0
    for name in ("rows.jsonl", "micro.jsonl"):
        assert all(json.loads(x) for x in lines(out / name))
    assert len(lines(out / "rows.jsonl")) == 4
    assert (out / "metrics.json").read_text() == metrics


def test_calls_logged_before_a_kill_are_not_counted_twice(tmp_path, text_file, loads, capsys):
    """A kill between a sample's micro lines and its row: the rerun logs the calls again, and
    the tables count only the calls of the run that wrote the row."""
    out = tmp_path / "run"
    argv = eval_cli(out, text_file, "--metrics", samples=2)
    assert run_cli(argv, capsys)[0] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = lines(out / "rows.jsonl")
    (out / "rows.jsonl").write_text("\n".join(rows[:-1]) + "\n")
    assert run_cli(argv, capsys)[0] == 0
    assert json.loads((out / "metrics.json").read_text()) == metrics


# ----- 3. an unwritable output is refused before any work ------------------------------------------
@pytest.fixture()
def a_file(tmp_path):
    p = tmp_path / "a_file"
    p.write_text("not a folder\n")
    return p


@pytest.mark.parametrize("where", ["the file itself", "under the file"])
def test_eval_refuses_an_unwritable_out_before_loading_a_model(a_file, text_file, loads, capsys, where):
    out = a_file if where == "the file itself" else a_file / "run"
    rc, err = run_cli(eval_cli(out, text_file), capsys)
    assert rc == 1 and "--out" in err and str(out) in err
    assert loads == [] and a_file.read_text() == "not a folder\n"


@pytest.mark.parametrize("where", ["a folder", "under a file"])
@pytest.mark.parametrize("method", ["double-sparsity", "hashattention"])
def test_calibrate_refuses_an_unwritable_out_before_any_work(
    tmp_path, a_file, monkeypatch, capsys, method, where
):
    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr("maskgraph.calibrate.models.load", no_load)
    out = tmp_path if where == "a folder" else a_file / "x.safetensors"
    argv = ["calibrate", method, "--model", "tiny-llama", "--tokens", "64", "--window", "32"]
    rc, err = run_cli([*argv, "--no-progress", "--out", str(out)], capsys)
    assert rc == 1 and "--out" in err and str(out) in err


@pytest.mark.parametrize(
    "how, message",
    [
        ("truncated", "not valid JSON"),
        ("no cells", "missing key 'cells'"),
        ("wrong type", "'length' must be an integer"),
        ("scores not numbers", "'scores' must be a list of numbers"),
        ("nlls not a list", "'nlls' must be a list of numbers"),
        ("counts not integers", "'counts' must be a list of integers"),
    ],
)
def test_report_names_a_malformed_metrics_file(finished, capsys, how, message):
    out, _ = finished
    path = out / "metrics.json"
    data = json.loads(path.read_text())
    if how == "truncated":
        path.write_text(path.read_text()[:80])
    elif how == "no cells":
        path.write_text(json.dumps({"rows": data["cells"]}))
    else:
        cid = next(iter(data["cells"]))
        key, value = {
            "wrong type": ("length", "long"),
            "scores not numbers": ("scores", [100.0, "n/a"]),
            "nlls not a list": ("nlls", 3.5),
            "counts not integers": ("counts", [255, 2.5]),
        }[how]
        data["cells"][cid][key] = value
        path.write_text(json.dumps(data))
    rc, err = run_cli(["report", str(out), "--out", str(out / "report.md")], capsys)
    assert rc == 1 and str(path) in err and message in err


@pytest.mark.parametrize("how, message", [("truncated", "not valid JSON"), ("wrong type", "'seed' must be")])
def test_report_names_a_malformed_config_of_a_run(finished, capsys, how, message):
    out, _ = finished
    path = out / "config.json"
    path.write_text(_edit_config(json.loads(path.read_text()), how))
    rc, err = run_cli(["report", str(out), "--out", str(out / "report.md")], capsys)
    assert rc == 1 and str(path) in err and message in err


def test_a_graph_text_in_config_too_deep_to_read_is_no_graph_name(tmp_path):
    """config.json's graph YAML is read with the graph reader's limits: a 20,000-deep list (an
    edited file) names no graph instead of ending the resume in a RecursionError."""
    from maskgraph.eval.rundir import RUN_IDENTITY, check_same_run

    settings = {key: None for key in RUN_IDENTITY}
    old = {**settings, "graph_yaml": {"deep.yaml": "[" * 20_000 + "]" * 20_000}}
    check_same_run(tmp_path, old, settings, {"g.yaml": load_graph("streaming_llm").to_yaml()})


def test_metrics_text_is_json_with_number_lists_on_one_line():
    from maskgraph.eval.rundir import metrics_text

    data = {
        "cells": {
            "b": {"scores": [100.0, 0.0, 1e-05, -2.5], "per_head": {"0": {"density": [0.1, 0.25]}}},
            "a": {"label": "[1, 2]", "empty": [], "none": None, "flags": [True, False], "names": ["x", "y"]},
        }
    }
    text = metrics_text(data)
    assert json.loads(text) == data
    assert '"scores": [100.0, 0.0, 1e-05, -2.5]' in text and '"density": [0.1, 0.25]' in text
    assert '"label": "[1, 2]"' in text and text.index('"a"') < text.index('"b"')  # keys sorted
    assert '"flags": [\n' in text  # booleans are not numbers
