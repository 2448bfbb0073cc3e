"""Output paths checked before any work starts: a model load or a calibration should never run
only to fail at its last step because the result cannot be written. The checks create nothing;
the writer creates missing folders."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import OutputPathError


def writable_folder(path: str | Path, what: str = "--out") -> Path:
    """``path`` as a folder this process can create or write into (missing parents allowed).

    ``what`` names the option in the message. Raises :class:`OutputPathError` (one line: the
    option, the path, the reason) when it is a file, lies under a file, or cannot be written.
    """
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{what} {path}: is a file, not a folder")
    _check_writable(folder, what, path)
    return folder


def writable_file(path: str | Path, what: str = "--out") -> Path:
    """``path`` as a file this process can create or replace (missing parent folders allowed);
    the file itself is left as it is. Raises :class:`OutputPathError` when it is a folder, lies
    under a file, or cannot be written."""
    target = Path(path).expanduser()
    if target.is_dir() or str(path).endswith(("/", "\\")):
        raise OutputPathError(f"{what} {path}: is a folder; give a file name")
    _check_writable(target.parent, what, path)
    if target.exists():
        try:
            with open(target, "ab"):
                pass
        except OSError as exc:
            raise OutputPathError(f"{what} {path}: cannot write it ({_reason(exc)})") from None
    return target


def _check_writable(folder: Path, what: str, path: str | Path) -> None:
    """A file can be created in ``folder``, or in the nearest folder above it that exists."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{what} {path}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OutputPathError(f"{what} {path}: cannot write in {existing} ({_reason(exc)})") from None


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
