"""The corpus of malformed graphs in tests/data/bad_graphs: each is rejected with a named error by
the API and with a one-line message (no traceback, non-zero exit) by ``maskgraph validate``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import maskgraph as mg
from maskgraph.cli.main import main

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_graphs"
EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text())
FILES = sorted(p.name for p in CORPUS.glob("*.yaml") if p.name != "expected.yaml")


def test_corpus_is_large_and_fully_described():
    assert len(FILES) >= 50
    assert set(FILES) == set(EXPECTED), "every corpus file needs an entry in expected.yaml and vice versa"


@pytest.mark.parametrize("name", FILES)
def test_api_raises_the_named_error(name):
    want = EXPECTED[name]
    cls = getattr(mg, want["error"])
    path = CORPUS / name
    with pytest.raises(mg.MaskgraphError) as info:
        mg.load_graph(path)
    exc = info.value
    assert type(exc) is cls, f"{name}: expected {cls.__name__}, got {type(exc).__name__}: {exc}"
    msg = str(exc)
    assert want["match"] in msg, f"{name}: {want['match']!r} not in {msg!r}"
    assert msg.startswith(str(path)), f"{name}: message does not name the file: {msg!r}"
    assert msg.isprintable(), f"{name}: control characters in the message: {msg!r}"
    assert len(msg) - len(str(path)) <= 600, f"{name}: message of {len(msg)} characters"


@pytest.mark.parametrize("name", FILES)
def test_cli_prints_one_clean_line(name, capsys):
    rc = main(["validate", str(CORPUS / name)])
    out, err = capsys.readouterr()
    assert rc != 0
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and str(CORPUS / name) in lines[0]
    assert lines[0].isprintable()
    assert "Traceback" not in err


def test_cli_subprocess_over_the_whole_corpus():
    """The real entry point, all files at once: one error line per file, exit 1, no traceback."""
    files = [str(CORPUS / n) for n in FILES]
    proc = subprocess.run(
        [sys.executable, "-m", "maskgraph", "validate", *files], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(FILES)


# ----- inputs too large to commit: written at run time ------------------------------------------
GOOD = "graph: g\nnodes:\n  - {name: w, op: local, params: {size: 4}}\noutput: w\n"
LIMIT = 1 << 20  # maskgraph.loader.MAX_GRAPH_BYTES, as docs/guarantees.md states it


def padded(size: int, tail: str = "") -> str:
    """GOOD, a comment line and ``tail``: exactly ``size`` bytes of ASCII."""
    return GOOD + "#" + "x" * (size - len(GOOD) - len(tail) - 2) + "\n" + tail


GENERATED = {
    # name: (text, error class, substring of the message)
    "one_byte_over.yaml": (padded(LIMIT + 1), "YAMLSyntaxError", "larger than 1048576 bytes"),
    "twelve_megabytes.yaml": (padded(12 << 20, "nodes: [\n"), "YAMLSyntaxError", "larger than 1048576 bytes"),
    "nested_lists_20000.yaml": (
        "graph: g\ndoc: " + "[" * 20000 + "]" * 20000 + "\n",
        "YAMLSyntaxError",
        "nesting is too deep",
    ),
    "nested_maps_20000.yaml": (
        "graph: g\ndoc: " + "{a: " * 20000 + "}" * 20000 + "\n",
        "YAMLSyntaxError",
        "too deep",
    ),
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generated_bad_graphs")
    for name, (text, _, _) in GENERATED.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_inputs_raise_the_named_error(name, generated, capsys):
    _, error, match = GENERATED[name]
    path = generated / name
    with pytest.raises(mg.MaskgraphError) as info:
        mg.load_graph(path)
    assert type(info.value) is getattr(mg, error) and match in str(info.value)
    assert str(info.value).startswith(str(path))
    rc = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert rc == 1 and out == "" and len(err.splitlines()) == 1 and match in err


def test_size_limit_is_exact_and_covers_yaml_text(tmp_path):
    at_limit = tmp_path / "at_limit.yaml"
    at_limit.write_text(padded(LIMIT))
    assert mg.load_graph(at_limit).name == "g"
    assert mg.load_graph(padded(LIMIT)).name == "g"
    with pytest.raises(mg.YAMLSyntaxError, match="larger than 1048576 bytes"):
        mg.load_graph(padded(LIMIT + 1))
    multibyte = GOOD + "#" + "é" * (LIMIT // 2) + "\n"  # fewer characters than the limit, more bytes
    with pytest.raises(mg.YAMLSyntaxError, match="larger than 1048576 bytes"):
        mg.load_graph(multibyte)


def test_deeply_nested_dict_source_is_a_named_error():
    nested: list = []
    for _ in range(20000):
        nested = [nested]
    with pytest.raises(mg.GraphError, match="nesting is too deep"):
        mg.load_graph({"graph": "g", "doc": nested, "nodes": [{"name": "w", "op": "full"}], "output": "w"})
    looped: dict = {"graph": "g", "nodes": [{"name": "w", "op": "full"}], "output": "w"}
    looped["doc"] = [looped]
    with pytest.raises(mg.GraphError, match="nesting is too deep"):
        mg.load_graph(looped)


def _limit_memory():  # runs in the child: an unbounded read ends in MemoryError, not in swap
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_input_is_refused_after_the_limit():
    """`maskgraph validate /dev/zero` reads one byte past the limit, not until memory runs out."""
    proc = subprocess.run(
        [sys.executable, "-m", "maskgraph", "validate", "/dev/zero"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_memory,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "error: /dev/zero: the file is larger than 1048576 bytes (MAX_GRAPH_BYTES), the most maskgraph "
        "reads for a graph"
    )
