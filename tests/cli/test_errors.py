"""Every subcommand over a corpus of bad command lines: a non-zero exit status, no traceback, one
line on stderr (or argparse's usage and one error line) that names the offending thing, and
nothing that loads a shipped model first (docs/guarantees.md, "The command line's errors")."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import maskgraph as mg
from maskgraph.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
BAD_GRAPHS = ROOT / "tests" / "data" / "bad_graphs"
BAD_GRAPH_FILES = sorted(p.name for p in BAD_GRAPHS.glob("*.yaml") if p.name != "expected.yaml")
EXPECTED = yaml.safe_load((BAD_GRAPHS / "expected.yaml").read_text())


class ModelLoaded(BaseException):
    """Raised instead of loading a shipped model: a bad argument must be refused before that.
    (A BaseException, so that no handler in main() turns it into a message.)"""


@pytest.fixture
def no_model_loads(monkeypatch):
    """Unknown names still reach the real ``load_model`` (it refuses them before loading);
    a shipped model's name raises :class:`ModelLoaded`."""
    import maskgraph.hf as hf
    import maskgraph.hf.models as models

    real = models.load_model

    def load_model(name="smollm2", *args, **kwargs):
        if name not in models.MODELS:
            return real(name, *args, **kwargs)
        raise ModelLoaded(name)

    monkeypatch.setattr(models, "load_model", load_model)
    monkeypatch.setattr(hf, "load_model", load_model)
    from transformers import AutoModelForCausalLM

    def from_pretrained(*args, **kwargs):
        raise ModelLoaded(str(args[:1]))

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)


@pytest.fixture
def user_cache(tmp_path, monkeypatch) -> Path:
    """An empty maskgraph cache (``$MASKGRAPH_CACHE``): no calibration file, no converted model."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MASKGRAPH_CACHE", str(cache))
    return cache


@pytest.fixture
def paths(tmp_path) -> dict[str, str]:
    """The bad inputs the corpus's command lines name, by placeholder."""
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Caf\u00e9 cr\u00e8me".encode("latin-1"))
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    folder = tmp_path / "folder"
    folder.mkdir()
    file = tmp_path / "file.txt"
    file.write_text("some text\n")
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "metrics.json").write_text("{cells: [")
    no_cells = tmp_path / "no_cells"
    no_cells.mkdir()
    (no_cells / "metrics.json").write_text(json.dumps({"rows": []}))
    cell_lacks = tmp_path / "cell_lacks"
    cell_lacks.mkdir()
    (cell_lacks / "metrics.json").write_text(json.dumps({"cells": {"a/ppl/16": {"graph": "a"}}}))
    return {
        "tmp": str(tmp_path),
        "latin1": str(latin1),
        "empty": str(empty),
        "folder": str(folder),
        "file": str(file),
        "missing": str(tmp_path / "missing.yaml"),
        "escape": str(tmp_path / "evil\x1b[31m.yaml"),
        "bad_json": str(bad_json),
        "no_cells": str(no_cells),
        "cell_lacks": str(cell_lacks),
    }


@dataclass(frozen=True)
class Case:
    """A bad command line and what its error line must contain; ``usage``: argparse refuses it
    (status 2, usage lines before the error line)."""

    argv: tuple[str, ...]
    names: tuple[str, ...]
    usage: bool = False


def case(*argv: str, names: tuple[str, ...], usage: bool = False):
    return pytest.param(Case(argv, names, usage), id=" ".join(argv).replace("{", "").replace("}", ""))


EVAL = ("eval", "--graph", "dense", "--out", "{tmp}/run")
MASK = ("show", "dense", "--mask")
TINY = ("--model", "tiny-llama")
DS = ("calibrate", "double-sparsity")

CORPUS = [
    # validate
    case("validate", "{missing}", names=("{missing}", "no such file")),
    case("validate", "{folder}", names=("{folder}", "is a folder")),
    case("validate", "{latin1}", names=("{latin1}", "not UTF-8")),
    case("validate", "{escape}", names=("evil\\x1b[31m.yaml", "no such file")),
    case("validate", "streaming_llm", "-p", "window_size=2001-01-01", names=("window_size", "as a date")),
    case("validate", "dense", "-p", "x=!!binary aGVsbG8=", names=("x=!!binary", "as bytes")),
    case("validate", names=("FILE",), usage=True),
    # show
    case("show", "{missing}", names=("{missing}", "no such file")),
    case("show", "dense", "-p", "sink_size=3", names=("sink_size",)),
    case("show", "dense", "-o", "{folder}", names=("-o {folder}", "is a folder")),
    case("show", "dense", "-o", "{file}/g.dot", names=("{file}", "is a file, not a folder")),
    case("show", "dense", "-o", "{tmp}/g.jpeg", names=("'.jpeg'", ".dot")),
    case(*MASK, *TINY, "--prompt-file", "{latin1}", names=("--prompt-file {latin1}", "not UTF-8", "0xe9")),
    case(*MASK, *TINY, "--prompt-file", "{empty}", names=("--prompt-file {empty}", "empty")),
    case(*MASK, *TINY, "--prompt-file", "{folder}", names=("--prompt-file {folder}", "is a folder")),
    case(*MASK, "--prompt", " ", names=("--prompt is empty",)),
    case(*MASK, "--prompt", "x", "--prompt-file", "{file}", names=("--prompt", "not allowed"), usage=True),
    case(*MASK, "--layer", "-1", names=("--layer", ">= 0"), usage=True),
    case(*MASK, "--head", "x", names=("--head", "'x'"), usage=True),
    case(*MASK, "-o", "{tmp}/m.svg", names=("PNG", "m.svg")),
    case(*MASK, "-o", "{file}/m.png", names=("{file}", "is a file, not a folder")),
    case(*MASK, "--model", "nomodel", names=("'nomodel'", "smollm2")),
    case(*MASK, "--model", "tiny-nope", names=("'tiny-nope'", "tiny-llama")),
    # ops
    case("ops", "topkk", names=("'topkk'", "did you mean 'topk'")),
    case("ops", "--family", "nope", names=("--family", "'nope'"), usage=True),
    # run
    case("run", "--max-new-tokens", "0", names=("--max-new-tokens", ">= 1"), usage=True),
    case("run", "--max-new-tokens", "-2", names=("--max-new-tokens", ">= 1"), usage=True),
    case("run", "--device", "cuda:99", names=("--device", "'cuda:99'"), usage=True),
    case("run", "--device", "nonsense", names=("--device", "'nonsense'", "cpu"), usage=True),
    case("run", "--prompt-file", "{latin1}", names=("--prompt-file {latin1}", "not UTF-8")),
    case("run", "--prompt-file", "{folder}", names=("--prompt-file {folder}", "is a folder")),
    case("run", "--prompt-file", "{missing}", names=("--prompt-file {missing}", "no such file")),
    case("run", "--prompt-file", "{empty}", names=("--prompt-file {empty}", "empty")),
    case("run", "--question", "", names=("--question is empty",)),
    case("run", "--dense-layers", "-1", names=("--dense-layers", "-1")),
    case("run", "--dense-layers", "a", names=("--dense-layers", "'a'")),
    case("run", "--graph", "nope", names=("'nope'", "quest")),
    case("run", "--graph", "dense", "-p", "nope=1", names=("'nope'",)),
    case("run", "--model", "nomodel", names=("'nomodel'", "smollm2")),
    case("run", "--protocol", "nope", names=("--protocol", "'nope'"), usage=True),
    # eval
    case(*EVAL, "--densities", "2", names=("--densities", "(0, 1]"), usage=True),
    case(*EVAL, "--samples", "0", names=("--samples", ">= 1"), usage=True),
    case(*EVAL, "--lengths", "x", names=("--lengths", "'x'"), usage=True),
    case(*EVAL, "--device", "cuda:99", names=("--device", "'cuda:99'"), usage=True),
    case(*EVAL, "--task", "nope", names=("'nope'", "niah_single_number")),
    case(
        *EVAL[:2], "streaming_llm", *EVAL[3:], "-p", "window_size=2001-01-01", names=("window_size", "date")
    ),
    case("eval", "--graph", "{missing}", "--out", "{tmp}/run", names=("{missing}", "no such file")),
    case("eval", "--graph", "dense", names=("--out",), usage=True),
    # report
    case("report", "{missing}", names=("{missing}", "metrics.json")),
    case("report", "{bad_json}", names=("{bad_json}/metrics.json", "not valid JSON")),
    case("report", "{no_cells}", names=("{no_cells}/metrics.json", "'cells'")),
    case("report", "{cell_lacks}", names=("'a/ppl/16'", "label")),
    case("report", "{missing}", "--out", "{folder}", names=("--out {folder}", "is a folder")),
    case("report", "{missing}", "--img-dir", "{file}", names=("--img-dir {file}", "is a file, not a folder")),
    # a bad -p value is reported as set by its -p option
    case("validate", "streaming_llm", "-p", "window_size=-3", names=("set by -p window_size=-3",)),
    case("show", "streaming_llm", "-p", "window_size=-3", names=("set by -p window_size=-3",)),
    case("run", "--graph", "streaming_llm", "-p", "window_size=-3", names=("set by -p window_size=-3",)),
    case(*EVAL[:2], "streaming_llm", *EVAL[3:], "-p", "window_size=-3", names=("set by -p window_size=-3",)),
    # bench (the script's own options are checked by the script's argparse)
    case("bench", "nope", names=("'nope'", "attention"), usage=True),
    case("bench", "attention", "--nope", names=("attention.py: error:", "--nope"), usage=True),
    # calibrate
    case("calibrate", names=("METHOD",), usage=True),
    case(*DS, *TINY, "--batch-size", "0", names=("--batch-size", ">= 1"), usage=True),
    case(*DS, *TINY, "--window", "-5", names=("--window", ">= 1"), usage=True),
    case(*DS, "--model", "tiny-nope", names=("'nope'", "llama")),
    case(*DS, "--model", "nomodel", names=("'nomodel'", "smollm2")),
    case(*DS, "--model", "{folder}", names=("{folder}", "config.json")),
    case(*DS, *TINY, "--text", "{missing}", names=("{missing}",)),
]


def run_main(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_error(status, err: str, command: str, names: list[str], usage: bool = False) -> None:
    """The error contract: status, no traceback, the error on one line naming every piece of ``names``."""
    assert "Traceback" not in err and "internal error" not in err, err
    assert "\x1b" not in err, "terminal escapes must be printed escaped"
    lines = err.strip().splitlines()
    if usage:
        assert status == 2, err
        assert lines[0].startswith("usage: "), err
        line = lines[-1]
    else:
        assert status == 1, err
        assert len(lines) == 1, err
        line = lines[0]
        # validate prints its own "error: FILE: ..." line per bad file
        prefixes = (f"maskgraph {command}: error: ", "error: " if command == "validate" else "-")
        assert line.startswith(prefixes), line
    for name in names:
        assert name in line, f"{name!r} not in {line!r}"


@pytest.mark.parametrize("bad", CORPUS)
def test_every_subcommand_refuses_bad_input_in_one_line(bad: Case, paths, no_model_loads, capsys):
    argv = [a.format(**paths) for a in bad.argv]
    status, _, err = run_main(capsys, argv)
    assert_one_error(status, err, argv[0], [n.format(**paths) for n in bad.names], bad.usage)


@pytest.mark.parametrize("name", BAD_GRAPH_FILES)
@pytest.mark.parametrize("command", ["show", "run"])
def test_bad_graphs_are_refused_before_any_model_loads(command, name, no_model_loads, capsys):
    path = str(BAD_GRAPHS / name)
    argv = ["show", path, "--mask"] if command == "show" else ["run", "--graph", path]
    status, out, err = run_main(capsys, argv)
    assert out == ""
    assert_one_error(status, err, command, [path, EXPECTED[name]["match"]])


# ----- what the model's config can tell, checked before the model loads --------------------------
def _no_file(model: str, kind: str) -> list[str]:
    return [
        f"{{cache}}/calibration/{model}/{kind}.safetensors",
        f"maskgraph calibrate {kind.replace('_', '-')} --model {model}",
    ]


@pytest.mark.parametrize(
    "argv, names",
    [
        (["run", "--graph", "double_sparsity"], _no_file("smollm2", "double_sparsity")),
        (["run", "--graph", "hashattention"], _no_file("smollm2", "hashattention")),
        (
            ["eval", "--graph", "dense", "double_sparsity", "--out", "{tmp}/run"],
            _no_file("smollm2", "double_sparsity"),
        ),
        (["show", "hashattention", "--mask", "--model", "smollm2"], _no_file("smollm2", "hashattention")),
        (["run", "--graph", "pqcache", "-p", "pq_group_factor=7"], ["pq_group_factor=7", "head dim D=64"]),
        (
            ["eval", "--graph", "pqcache", "-p", "pq_group_factor=7", "--out", "{tmp}/run"],
            ["pq_group_factor=7"],
        ),
        (["run", "--dense-layers", "0,30"], ["--dense-layers 30", "0..29"]),
        (["show", "quest", "--mask", "--model", "smollm2", "--layer", "30"], ["--layer 30", "0..29"]),
        (["show", "quest", "--mask", "--model", "smollm2", "--head", "9"], ["--head 9", "0..8"]),
    ],
)
def test_what_needs_no_weights_is_refused_before_any_model_file_is_read(
    argv, names, user_cache, tmp_path, no_model_loads, capsys
):
    fill = {"cache": str(user_cache), "tmp": str(tmp_path)}
    status, out, err = run_main(capsys, [a.format(**fill) for a in argv])
    assert out == ""
    assert_one_error(status, err, argv[0], [n.format(**fill) for n in names])
    assert not (tmp_path / "run").exists()


def test_run_finds_the_calibration_file_made_for_its_model(user_cache, no_model_loads, capsys):
    """A channel file where ``maskgraph calibrate double-sparsity --model smollm2`` writes it is
    used without -p: run gets past every check to the model's loading."""
    import torch

    from maskgraph.calibrate.formats import model_signature, save_channels
    from maskgraph.hf.models import model_config
    from maskgraph.hf.preflight import _ConfigOnly

    config = model_config("smollm2")
    channels = torch.stack([torch.randperm(64) for _ in range(30 * 3)]).view(30, 3, 64)
    meta = {"model": "smollm2", "model_signature": json.dumps(model_signature(_ConfigOnly(config)))}
    save_channels(user_cache / "calibration" / "smollm2" / "double_sparsity.safetensors", channels, meta)
    with pytest.raises(ModelLoaded):
        main(["run", "--graph", "double_sparsity"])
    capsys.readouterr()
    short = channels[:10]  # a file for a 10-layer model: refused before the load, naming it
    save_channels(user_cache / "calibration" / "smollm2" / "double_sparsity.safetensors", short, meta)
    status, _, err = run_main(capsys, ["run", "--graph", "double_sparsity"])
    assert_one_error(
        status,
        err,
        "run",
        ["double_sparsity.safetensors", "not for the model in use ('smollm2')", "num_hidden_layers 10"],
    )


# ----- the last-resort handler, --debug, messages and warnings ----------------------------------
def _ops_raises(monkeypatch, exc: BaseException) -> None:
    import maskgraph.cli.ops as ops

    def run(args):
        raise exc

    monkeypatch.setattr(ops, "run", run)


def test_an_unexpected_exception_is_one_line_with_status_3_and_raises_under_debug(monkeypatch, capsys):
    _ops_raises(monkeypatch, ZeroDivisionError("division by zero"))
    status, _, err = run_main(capsys, ["ops"])
    assert status == 3
    assert err == (
        "maskgraph ops: internal error: ZeroDivisionError: division by zero "
        "(run with --debug for the traceback)\n"
    )
    for argv in (["--debug", "ops"], ["ops", "--debug"]):
        with pytest.raises(ZeroDivisionError):
            main(argv)


def test_debug_reaches_nested_subcommands(no_model_loads):
    with pytest.raises(mg.MaskgraphError, match="tiny architecture"):
        main(["calibrate", "double-sparsity", "--model", "tiny-nope", "--debug"])


def test_multi_line_messages_and_control_characters_print_on_one_line(monkeypatch, capsys):
    _ops_raises(monkeypatch, mg.MaskgraphError("not installed; install it with:\n    pip install x\x07"))
    status, _, err = run_main(capsys, ["ops"])
    assert status == 1
    assert err == "maskgraph ops: error: not installed; install it with: pip install x\\x07\n"


def test_os_errors_name_the_file(monkeypatch, capsys):
    _ops_raises(monkeypatch, PermissionError(13, "Permission denied", "/data/out.md"))
    status, _, err = run_main(capsys, ["ops"])
    assert status == 1 and err == "maskgraph ops: error: /data/out.md: Permission denied\n"


def test_warnings_print_one_line_each(monkeypatch, capsys):
    import maskgraph.cli.ops as ops

    def run(args):
        warnings.warn("node 'b'\nfeeds nothing", mg.MaskgraphWarning, stacklevel=1)
        warnings.warn("a library's warning", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(ops, "run", run)
    status, _, err = run_main(capsys, ["ops"])
    assert status == 0
    assert err.splitlines() == [
        "maskgraph ops: warning: node 'b' feeds nothing",
        "maskgraph ops: warning: UserWarning: a library's warning",
    ]


# ----- the real exit path -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, status, names",
    [
        (["run", "--max-new-tokens", "0"], 2, ["maskgraph run: error: argument --max-new-tokens"]),
        (["show", "dense", "--mask", "--model", "tiny-llama", "--prompt-file", "{latin1}"], 1, ["not UTF-8"]),
    ],
)
def test_the_process_exits_without_a_traceback(argv, status, names, paths):
    argv = [a.format(**paths) for a in argv]
    proc = subprocess.run(
        [sys.executable, "-m", "maskgraph", *argv], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert all(n in last for n in names), proc.stderr


# ----- help shows defaults ----------------------------------------------------------------------
def _command_parsers(parser: argparse.ArgumentParser, prefix: str = "maskgraph"):
    """(command line, parser) for every subcommand, nested ones (calibrate's methods) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _command_parsers(sub, f"{prefix} {name}")


def _shown(default) -> str:
    return " ".join(map(str, default)) if isinstance(default, list) else str(default)


def test_every_option_with_a_default_shows_it_in_help():
    missing = []
    for command, parser in _command_parsers(build_parser()):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            d = action.default
            if not action.option_strings or d is None or d is False or d == [] or d == "":
                continue
            if d is argparse.SUPPRESS or action.help is argparse.SUPPRESS:
                continue
            if f"default: {_shown(d)}" not in text and f"default {_shown(d)}" not in text:
                missing.append(f"{command} {action.option_strings[-1]} (default {_shown(d)})")
    assert not missing, "help does not show: " + "; ".join(missing)


def test_eval_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: smollm2)", "(default: 3)", "(default: 1024)", "(default: cpu)"):
        assert shown in text


def test_a_graph_name_never_makes_the_default_image_path():
    """`show --mask` names its image after the graph; a name is text from a file, never a path."""
    from maskgraph.cli.show import default_image_name

    assert default_image_name("quest") == "mask_quest.png"
    for hostile in ("../../etc/x", "/tmp/evil", "a/b", "..", "\x1b[31mred", ""):
        name = default_image_name(hostile)
        assert "/" not in name and "\x1b" not in name and not name.startswith("mask_."), name
        assert Path(name).name == name
