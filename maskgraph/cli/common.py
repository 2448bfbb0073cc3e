"""Helpers shared by subcommands: parsing ``key=value`` overrides, loading graphs."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from ..errors import OverrideError
from ..ir import Graph
from ..loader import load_graph


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["heavy_size=0.05", "page_size=16"]`` -> {"heavy_size": 0.05, "page_size": 16}."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise OverrideError(f"override {item!r} is not of the form name=value")
        key, _, text = item.partition("=")
        try:
            out[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise OverrideError(f"override {item!r}: value is not a plain value") from None
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
