"""Helpers shared by subcommands: parsing ``key=value`` overrides, loading graphs."""

from __future__ import annotations

import argparse
from typing import Any

from ..display import printable
from ..errors import OverrideError
from ..ir import Graph
from ..loader import load_graph, parse_override_value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["heavy_size=0.05", "page_size=16"]`` -> {"heavy_size": 0.05, "page_size": 16}.

    Each value is read as YAML (see :func:`~maskgraph.loader.parse_override_value`: a plain
    number, string, bool or null, no anchors or aliases); a bad one raises an
    :class:`~maskgraph.errors.OverrideError` naming its ``-p`` option.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise OverrideError(f"-p {printable(item)}: not of the form name=value")
        key, _, text = item.partition("=")
        try:
            out[key.strip()] = parse_override_value(text)
        except OverrideError as exc:
            raise OverrideError(f"-p {printable(item)}: {exc.reason}") from None
    return out


def add_override_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-p",
        "--param",
        dest="overrides",
        action="append",
        metavar="NAME=VALUE",
        help="override a graph parameter (repeatable), e.g. -p heavy_size=0.05",
    )


def load(path: str, overrides: list[str] | None = None) -> Graph:
    return load_graph(path, overrides=parse_overrides(overrides))
