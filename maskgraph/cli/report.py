"""``maskgraph report``: not built yet (see the project's issues)."""

from __future__ import annotations

import sys


def add_parser(sub):
    p = sub.add_parser("report", help="(report: not built yet)", description="Not built yet.")
    return p


def run(args) -> int:
    print("maskgraph report: not built yet", file=sys.stderr)
    return 2
