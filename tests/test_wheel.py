"""A wheel built from the repository works without the source tree: it ships the graphs and
the data, and the command line and ``mg.load_graph`` find them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")  # built once per pytest-xdist worker that runs these tests
def installed(tmp_path_factory) -> dict[str, str]:
    """Environment variables under which ``maskgraph`` imports from an installed wheel."""
    pytest.importorskip(
        "setuptools", reason="building the wheel offline needs setuptools in this environment"
    )
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: building in place would leave build/ in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("maskgraph", "graphs"):
        shutil.copytree(
            ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp)], check=True
    )
    (wheel,) = tmp.glob("maskgraph-*.whl")
    site = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    return {**os.environ, "PYTHONPATH": str(site)}


def run(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_wheel_ships_every_graph(installed, tmp_path):
    code = (
        "import maskgraph as mg, json; "
        "print(json.dumps([mg.__file__, sorted(mg.shipped_graphs()), mg.load_graph('quest').name]))"
    )
    done = run(installed, sys.executable, "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where, names, quest = yaml.safe_load(done.stdout)
    assert where.startswith(installed["PYTHONPATH"]), where  # not the source tree
    assert names == sorted(p.stem for p in (ROOT / "graphs").glob("*.yaml"))
    assert quest == "quest"


def test_the_installed_command_line_validates_every_shipped_graph(installed, tmp_path):
    names = sorted(p.stem for p in (ROOT / "graphs").glob("*.yaml"))
    done = run(installed, sys.executable, "-m", "maskgraph", "validate", *names, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ok: ") == len(names)
    helped = run(installed, sys.executable, "-m", "maskgraph", "run", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--graph" in helped.stdout
