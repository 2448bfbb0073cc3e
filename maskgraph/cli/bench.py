"""``maskgraph bench``: not built yet (see the project's issues)."""

from __future__ import annotations

import sys


def add_parser(sub):
    p = sub.add_parser("bench", help="(bench: not built yet)", description="Not built yet.")
    return p


def run(args) -> int:
    print("maskgraph bench: not built yet", file=sys.stderr)
    return 2
