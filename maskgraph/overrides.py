"""Overriding a graph's ``params:`` block, and the checks and messages loading shares with it.

:func:`apply_overrides` returns a validated copy of a graph with some parameters replaced; a
bad value is reported as coming from the override, not from the line it replaces
(docs/guarantees.md, "Size limits and validation"). This module builds no graph from text, so
``Graph.with_overrides`` reaches it without reaching the loader.
"""

from __future__ import annotations

import copy
import datetime
import difflib
from typing import TYPE_CHECKING, Any

from .display import printable, shown, shown_list
from .errors import GraphError, OverrideError
from .validate import validate

if TYPE_CHECKING:
    from .ir import Graph


def value_kind(value: Any) -> str:
    """What ``value`` is, for a message: "a mapping", "a list", "a date", "a float", ..."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return "a date"
    if isinstance(value, bytes):
        return "bytes (binary data)"
    return f"a {type(value).__name__}"


def suggest(name: Any, options) -> str:
    """The hint ``; did you mean 'x'?`` for the option closest to ``name`` (empty where none is close)."""
    close = difflib.get_close_matches(str(name)[:100], [str(o)[:100] for o in options], n=1, cutoff=0.5)
    return f"; did you mean {shown(close[0])}?" if close else ""


def is_scalar(v: Any) -> bool:
    """A value a graph parameter may take: a number, a string, true/false or null."""
    return v is None or isinstance(v, (bool, int, float, str))


def apply_overrides(graph: Graph, overrides: dict[str, Any], *, origin: str = "the override") -> Graph:
    """A validated copy of ``graph`` with its ``params:`` block updated from ``overrides``.

    A bad value is reported as coming from the override (``set by the override window_size=-5``;
    ``origin`` names where overrides come from, ``-p`` on the command line), not from the line
    of the ``params:`` block that it replaces.
    """
    if not isinstance(overrides, dict):
        raise OverrideError(f"overrides must be a dict name -> value, got {type(overrides).__name__}")
    unknown = [k for k in overrides if k not in graph.params]
    if unknown:
        k = unknown[0]
        raise OverrideError(
            f"override of unknown graph parameter {shown(k)}{suggest(k, graph.params)} "
            f"(graph '{printable(graph.name)}' defines: {shown_list(graph.params) or 'none'})",
            param=str(k),
            file=graph.source,
        )
    for k, v in overrides.items():
        check_override_value(k, v, file=graph.source)
    origins = {k: (f"{origin} {printable(k)}={shown(v)}", None) for k, v in overrides.items()}
    return overridden(graph, overrides, origins)


def check_override_value(name: str, value: Any, *, file: str | None = None, line: int | None = None) -> None:
    if not is_scalar(value):
        raise OverrideError(
            f"an override value must be a number, a string, true/false or null; got {value_kind(value)} {shown(value)}",
            param=name,
            file=file,
            line=line,
        )


def overridden(graph: Graph, overrides: dict[str, Any], origins: dict[str, tuple[str, int | None]]) -> Graph:
    """The validated copy of ``graph`` with ``overrides``; ``origins`` (name -> (what, line)) says
    where each overriding value comes from."""
    new = copy.copy(graph)
    new.params = {**graph.params, **overrides}
    new.nodes = {k: copy.deepcopy(v) for k, v in graph.nodes.items()}
    new.lines = dict(graph.lines)
    try:
        validate(new, origins=origins)
    except GraphError as exc:
        raise exc.located(graph.source) from None
    return new
