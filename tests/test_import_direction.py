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


def test_kernels_are_a_leaf_package():
    """Every Triton kernel lives in maskgraph/kernels/, which imports no operator, lowering or
    integration module (only errors and triton_util of maskgraph)."""
    below = {"maskgraph.errors", "maskgraph.triton_util"}
    kernels = ROOT / "kernels"
    for path in sorted(kernels.rglob("*.py")):
        ours = {n for n in _imported(path) if n.startswith("maskgraph")}
        bad = sorted(n for n in ours if not n.startswith("maskgraph.kernels") and n not in below)
        assert not bad, f"{path.relative_to(ROOT.parent)} imports {bad}"
    strays = sorted(str(p.relative_to(ROOT.parent)) for p in ROOT.rglob("*_kernel.py"))
    assert not strays, f"kernel modules outside maskgraph/kernels/: {strays}"


def test_kernel_modules_share_public_names_only():
    """A kernel module imports another's public names, never a private ``_name``."""
    for path in sorted((ROOT / "kernels").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports private {private} of .{node.module}"


def test_every_kernel_module_is_named_by_the_package():
    """The package's constants name exactly its kernel modules, and each launches something."""
    import importlib

    from maskgraph import kernels

    assert sorted(kernels.LAUNCHED + kernels.HELPERS) == kernels.kernel_modules()
    pytest.importorskip("triton")
    for module in kernels.LAUNCHED:
        found = vars(importlib.import_module(module))
        assert any(callable(f) and getattr(f, "__module__", "") == module for f in found.values()), module
