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

CORPUS = Path(__file__).parent / "data" / "bad_graphs"
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
    assert "\n" not in msg


@pytest.mark.parametrize("name", FILES)
def test_cli_prints_one_clean_line(name, capsys):
    rc = main(["validate", str(CORPUS / name)])
    out, err = capsys.readouterr()
    assert rc != 0
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and str(CORPUS / name) in lines[0]
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
