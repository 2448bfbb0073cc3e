"""``maskgraph validate FILE...``: check graphs; exit 0 when all are valid."""

from __future__ import annotations

import sys
import warnings

from ..errors import GraphError, MaskgraphWarning
from .common import add_override_arg, parse_overrides


def add_parser(sub):
    p = sub.add_parser(
        "validate",
        help="check graph files",
        description=(
            "Check YAML graph files: operators, parameters, wiring, port types, cycles, output.\n"
            "Prints one located message per bad file (file:line: node, parameter: what is wrong)\n"
            "and exits non-zero if any file is bad. Warnings (nodes that feed nothing) do not fail."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="graph files (or names of shipped graphs)")
    add_override_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    return p


def run(args) -> int:
    from ..loader import load_graph

    bad = 0
    overrides = parse_overrides(args.overrides)
    for path in args.files:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MaskgraphWarning)
            try:
                g = load_graph(path, overrides=overrides)
            except GraphError as exc:
                if args.debug:
                    raise
                bad += 1
                msg = str(exc) if exc.file else f"{path}: {exc}"
                print(f"error: {msg}", file=sys.stderr)
                continue
        for w in caught:
            if issubclass(w.category, MaskgraphWarning):
                print(f"warning: {path}: {w.message}", file=sys.stderr)
        if not args.quiet:
            print(f"ok: {path} (graph '{g.name}', {len(g.nodes)} nodes)")
    return 1 if bad else 0
