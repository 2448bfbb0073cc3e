"""Reading a benchmark's local copy through the Hugging Face ``datasets`` library.

``--data PATH`` is where the files lie; nothing is downloaded. For a sub-task whose file stems
are, say, ``("qasper",)``, the first of these that exists is read:

1. ``PATH`` itself when it is a file (``.jsonl``, ``.json`` or ``.parquet``) or a
   ``datasets.save_to_disk`` folder;
2. under ``PATH`` and ``PATH/data``: ``<stem>.jsonl``, ``<stem>.json``, ``<stem>.parquet``;
3. under the same folders, a folder ``<stem>``: a ``save_to_disk`` folder (a ``DatasetDict``
   gives its first split of the benchmark's split names), or a folder of ``.parquet`` /
   ``.jsonl`` files (the Hub's layout, e.g. ``qasper/test-00000-of-00001.parquet``; the files
   of the first split named in their names, or all of them).

A file or folder without the benchmark's columns is refused, naming the path and the columns.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ...errors import BenchmarkDataError, MaskgraphError
from .metrics import INSTALL

SUFFIXES = (".jsonl", ".json", ".parquet")


def _datasets():
    """The ``datasets`` module (only its local builders are used: nothing reaches the Hub)."""
    try:
        import datasets
    except ImportError as exc:
        raise MaskgraphError(
            f"the standard benchmarks are read with the 'datasets' package; {INSTALL}"
        ) from exc
    return datasets


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def candidates(root: Path, stems: tuple[str, ...]) -> list[Path]:
    """Where a sub-task's rows may be, in the order they are tried (see the module docstring)."""
    out: list[Path] = []
    for base in (root, root / "data"):
        for stem in stems:
            out.extend(base / f"{stem}{suffix}" for suffix in SUFFIXES)
            out.append(base / stem)
    return out


def find(root: Path, stems: tuple[str, ...]) -> Path | None:
    """The first existing location of ``stems`` under ``root`` (or ``root`` itself), or None."""
    if root.is_file() or (root.is_dir() and _is_saved_dataset(root)):
        return root
    for path in candidates(root, stems):
        if path.is_file():
            return path
        if path.is_dir() and (_is_saved_dataset(path) or _data_files(path)):
            return path
    return None


def _data_files(folder: Path) -> list[Path]:
    for suffix in (".parquet", ".jsonl", ".json"):
        files = sorted(folder.rglob(f"*{suffix}"))
        if files:
            return files
    return []


def _of_split(files: list[Path], splits: tuple[str, ...]) -> list[Path]:
    """Of a folder's data files, those of the first of ``splits`` named in their file or folder
    names (``test-00000-of-00001.parquet``, ``test/0000.parquet``); all when none is named."""
    for split in splits:
        mine = [f for f in files if f.name.startswith(split) or split in f.parent.name]
        if mine:
            return mine
    return files


def read_rows(path: Path, splits: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every row of the file or folder ``path`` as a plain dict (one split of a DatasetDict)."""
    ds = _datasets()
    if path.is_dir() and _is_saved_dataset(path):
        loaded = ds.load_from_disk(str(path))
        if isinstance(loaded, ds.DatasetDict):
            split = next((s for s in splits if s in loaded), None)
            if split is None:
                raise BenchmarkDataError(
                    f"{path}: a saved DatasetDict with splits {', '.join(loaded)}; expected one of "
                    f"{', '.join(splits)}"
                )
            loaded = loaded[split]
        return [dict(r) for r in loaded]
    files = _of_split(_data_files(path), splits) if path.is_dir() else [path]
    kind = "parquet" if files[0].suffix == ".parquet" else "json"
    # the Arrow cache and its locks go to a folder removed once the rows are read, not to the
    # user's ~/.cache/huggingface/datasets
    with tempfile.TemporaryDirectory(prefix="maskgraph-bench-") as cache:
        loaded = ds.load_dataset(kind, data_files=[str(f) for f in files], split="train", cache_dir=cache)
        rows = [dict(r) for r in loaded]
        del loaded
    return rows


def check_columns(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...], expected: str) -> None:
    """Refuse rows that lack one of ``columns`` (or no rows at all)."""
    if not rows:
        raise BenchmarkDataError(f"{path} holds no rows; expected {expected}")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise BenchmarkDataError(
            f"{path} is not in the expected schema: no column(s) {', '.join(missing)} "
            f"(it has {', '.join(rows[0])}); expected {expected}"
        )
