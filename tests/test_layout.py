"""The tests mirror the library: a folder of tests/ is a package of maskgraph/ (or ``core``, the
modules at maskgraph/'s top), and no test file lies elsewhere but the repository's own checks."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
HELPERS = {"data", "__pycache__"}


def test_every_test_folder_is_a_package_of_the_library():
    packages = {p.parent.name for p in (ROOT / "maskgraph").glob("*/__init__.py")} | {"core"}
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith(".")} - HELPERS
    assert folders <= packages, (
        f"tests/ folders that are no package of maskgraph/: {sorted(folders - packages)}"
    )


def test_test_files_have_distinct_names():
    """Test folders are not packages (no __init__.py): pytest imports each file by its name."""
    names = [p.name for p in TESTS.rglob("test_*.py") if "data" not in p.parts]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_the_readme_box_names_every_package():
    """README's "What is in the box" names every package of maskgraph/ as it is in the tree."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    box = readme.split("## What is in the box", 1)[1].split("\n## ", 1)[0]
    named = {line.split("`")[1] for line in box.splitlines() if line.startswith("| `")}
    packages = {f"maskgraph/{p.parent.name}/" for p in (ROOT / "maskgraph").glob("*/__init__.py")}
    packages -= {"maskgraph/data/", "maskgraph/graphs/"}
    assert packages <= named, f"packages missing from the README's box: {sorted(packages - named)}"
    stale = {n for n in named if n.startswith("maskgraph/") and n.endswith("/") and n != "maskgraph/"}
    assert stale <= packages, f"the README's box names what is not a package: {sorted(stale - packages)}"
