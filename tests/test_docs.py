"""The docs a user has: their links resolve, they cite no file a user lacks, and
docs/performance.md names what reproduces each table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _relative_links(page: Path) -> list[str]:
    links = [m.group(1).split("#")[0] for m in LINK.finditer(page.read_text())]
    return [link for link in links if link and "://" not in link and not link.startswith("mailto:")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_of_a_page_resolves(page):
    missing = [link for link in _relative_links(page) if not (page.parent / link).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to files that do not exist: {missing}"


def test_nothing_cites_the_design_notes_users_do_not_have():
    """Code, tests and docs cite the project's own pages (docs/*.md), not a design file."""
    this = Path(__file__).resolve()
    files = [*PAGES, *(ROOT / "maskgraph").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    files += list((ROOT / "benchmarks").glob("*.py"))
    citing = [str(f.relative_to(ROOT)) for f in files if f != this and re.search(r"DESIGN\b", f.read_text())]
    assert not citing, f"these cite DESIGN: {citing}"


def test_performance_page_is_short_and_names_what_reproduces_each_table():
    page = ROOT / "docs" / "performance.md"
    text = page.read_text()
    assert len(text.splitlines()) < 300
    scripts = set(re.findall(r"benchmarks/(\w+)\.py", text))
    assert scripts, "docs/performance.md names no benchmark script"
    for script in scripts:
        assert (ROOT / "benchmarks" / f"{script}.py").exists(), f"benchmarks/{script}.py is gone"
    for folder, pattern in re.findall(r"`results/([\w-]+)/([\w.*-]+)`", text):
        assert list((ROOT / "benchmarks" / "results" / folder).glob(pattern)), (
            f"docs/performance.md names benchmarks/results/{folder}/{pattern}, which does not exist"
        )
    # every folder of raw output is behind a published table
    for folder in (ROOT / "benchmarks" / "results").iterdir():
        assert f"results/{folder.name}/" in text, f"benchmarks/results/{folder.name} backs no table"


def test_every_cited_test_or_benchmark_file_exists():
    """Docs, tests and benchmarks name test files and scripts by path (`tests/ops/test_ops.py`):
    each named file is there (tests move with the package they test)."""
    files = [*PAGES, *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    files += list((ROOT / "maskgraph").rglob("*.py"))
    cited = {
        (f.relative_to(ROOT), m)
        for f in files
        for m in re.findall(r"\b((?:tests|benchmarks)/[a-z_/]+\.py)\b", f.read_text())
    }
    missing = sorted(f"{src}: {path}" for src, path in cited if not (ROOT / path).exists())
    assert not missing, "cited files that do not exist:\n" + "\n".join(missing)


def test_the_library_carries_no_run_log():
    """Comments and docstrings give reasons: no references to numbered benchmark runs and no
    measured microseconds (figures live in docs/performance.md, with their card and date)."""
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "maskgraph").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\b[Rr]uns? \d{2,}\b|\d\s*(µs|us)\b", line)
    ]
    assert not found, "run logs in the library:\n" + "\n".join(found)
