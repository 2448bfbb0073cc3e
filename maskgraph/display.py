"""User text as messages and terminal drawings show it: control characters escaped, long values
clipped, so that a graph can neither drive the terminal (``\\x1b[2J``) nor flood a message."""

from __future__ import annotations

import reprlib
from collections.abc import Iterable

#: Most characters of one user value (a name, a parameter value) that a message shows.
VALUE_CHARS = 80
#: Most items of a list of names (nodes, parameters) that a message shows.
LIST_ITEMS = 12

_ELLIPSIS = "..."


def _escaped(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def clip(text: str, limit: int = VALUE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, ``...`` marking the cut."""
    return text if len(text) <= limit else text[: max(0, limit - len(_ELLIPSIS))] + _ELLIPSIS


def printable(text: object, limit: int | None = VALUE_CHARS) -> str:
    """``str(text)`` with every non-printable character escaped as ``repr`` escapes it (``\\x1b``,
    ``\\n``), clipped to ``limit`` characters (``None``: not clipped)."""
    text = str(text)
    if limit is None:
        return _escaped(text)
    return clip(_escaped(text[: limit + 1]), limit)


_REPR = reprlib.Repr()
_REPR.maxstring = VALUE_CHARS
_REPR.maxother = VALUE_CHARS
_REPR.maxlong = VALUE_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxlevel = 3


def shown(value: object) -> str:
    """``repr(value)`` for a message: escaped (repr does it) and at most about
    :data:`VALUE_CHARS` characters, however large the value."""
    return clip(_REPR.repr(value), VALUE_CHARS)


def shown_list(items: Iterable[object], sep: str = ", ") -> str:
    """Names joined by ``sep``, escaped, at most :data:`LIST_ITEMS` of them (then ``... (N more)``)."""
    items = list(items)
    head = [printable(item) for item in items[:LIST_ITEMS]]
    rest = len(items) - len(head)
    return sep.join(head) + (f"{sep}... ({rest} more)" if rest > 0 else "")
