"""Imports run one way: core -> operators -> lowering -> hf / eval / calibrate / cli. A module
of a lower level never imports one of a higher level, not even inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "maskgraph"
#: Packages above the operators and the lowering (what they may not import).
UPPER = ("hf", "eval", "calibrate", "cli")


def _imported(path: Path) -> set[str]:
    """Absolute names of the maskgraph modules that ``path`` imports (relative imports resolved)."""
    package = path.relative_to(ROOT.parent).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            names.add(".".join([*base, *(node.module or "").split(".")]).strip("."))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("folder", ["ops", "lower", "sparse"])
def test_operators_and_lowering_import_nothing_above_them(folder):
    upper = tuple(f"maskgraph.{p}" for p in UPPER)
    for path in sorted((ROOT / folder).rglob("*.py")):
        bad = sorted(n for n in _imported(path) if n.startswith(upper))
        assert not bad, f"{path.relative_to(ROOT.parent)} imports {bad}"
