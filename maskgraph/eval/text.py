"""Long natural text for perplexity, from a registry package, and fixed-length token windows.

Default source: the King James Version of the Bible as shipped by Debian's ``bible-kjv-text``
package (read through the ``bible`` program of ``bible-kjv``; install both with
``apt-get install bible-kjv``). The translation dates from 1611 and its copyright has expired
(Debian's ``/usr/share/doc/bible-kjv-text/copyright``). Verse labels ("Ge1:1 ") are removed.
Any other plain-text file can be used instead (``--text-file``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import torch

from ..errors import MaskgraphError

KJV_DEFAULT_RANGE = "Genesis 1:1-50:26"
_VERSE_LABEL = re.compile(r"^\S+?\d+:\d+\s+", re.MULTILINE)


def kjv_text(passage: str = KJV_DEFAULT_RANGE) -> str:
    """The passage's text, verses joined by spaces, labels removed."""
    exe = shutil.which("bible")
    if exe is None:
        raise MaskgraphError(
            "the perplexity text comes from Debian's bible-kjv-text package; install it with "
            "'apt-get install bible-kjv' or pass --text-file PATH"
        )
    done = subprocess.run([exe, "-f", passage], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise MaskgraphError(f"'bible -f {passage}' failed: {done.stderr.strip() or 'no output'}")
    return strip_verse_labels(done.stdout)


def strip_verse_labels(text: str) -> str:
    """``"Ge1:1 In the beginning…\\nGe1:2 And…"`` -> ``"In the beginning… And…"``."""
    return " ".join(line.strip() for line in _VERSE_LABEL.sub("", text).splitlines() if line.strip())


def load_text(path: str | None = None) -> tuple[str, str]:
    """(text, description of its source): ``path`` if given, else the KJV Genesis."""
    if path is None:
        return kjv_text(), f"King James Version, {KJV_DEFAULT_RANGE} (Debian bible-kjv-text, public domain)"
    p = Path(path)
    if not p.is_file():
        raise MaskgraphError(f"text file {path!r} does not exist")
    return p.read_text(encoding="utf-8", errors="replace"), str(p)


def windows(tokenizer, text: str, window: int, count: int) -> list[torch.Tensor]:
    """The first ``count`` non-overlapping windows of ``window`` tokens, each (1, window) long."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    n = len(ids) // window
    if n < count:
        raise MaskgraphError(f"the text holds {n} windows of {window} tokens; {count} asked for")
    return [torch.tensor([ids[i * window : (i + 1) * window]], dtype=torch.long) for i in range(count)]
