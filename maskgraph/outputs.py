"""Output paths checked before any work starts: a model load or a calibration should never run
only to fail at its last step because the result cannot be written."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import OutputPathError

#: Prefix of the probe file written (and removed at once) to prove a folder is writable.
PROBE_PREFIX = ".maskgraph-probe-"


def writable_folder(path: str | Path, what: str = "--out") -> Path:
    """Create folder ``path`` (and its parents) if needed and prove a file can be written in it.

    ``what`` names the option in the message. Raises :class:`OutputPathError` (one line: the
    option, the path, the reason) when it is a file, lies under a file, or cannot be written.
    """
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{what} {folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=PROBE_PREFIX):
            pass
    except OSError as exc:
        raise OutputPathError(f"{what} {folder}: cannot write there ({_reason(exc)})") from None
    return folder


def writable_file(path: str | Path, what: str = "--out") -> Path:
    """Prove file ``path`` can be written (its folder is created if needed); the file itself is
    left as it is. Raises :class:`OutputPathError` when it is a folder or cannot be written."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise OutputPathError(f"{what} {target}: is a folder; give a file name")
    writable_folder(target.parent, what=f"{what} {target}: its folder")
    if target.exists():
        try:
            with open(target, "ab"):
                pass
        except OSError as exc:
            raise OutputPathError(f"{what} {target}: cannot write it ({_reason(exc)})") from None
    return target


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
