"""``maskgraph validate FILE...``: check graphs; exit 0 when all are valid."""

from __future__ import annotations

import sys
import warnings

from ..display import printable
from ..errors import GraphError, MaskgraphWarning
from .common import HelpFormatter, add_override_arg, load_parsed, one_line, parse_overrides


def add_parser(sub):
    p = sub.add_parser(
        "validate",
        help="check graph files",
        formatter_class=HelpFormatter,
        description=(
            "Check YAML graph files: YAML syntax (safe loading only; !!python tags are refused),\n"
            "operators, parameters (names, types, ranges, $references), wiring, port types,\n"
            "cycles and the output. Each bad file gets one located line,\n"
            "  error: FILE:LINE: node 'N', parameter 'P': what is wrong; what would be valid\n"
            "and the exit status is 1 if any file is bad. Warnings (a node that feeds nothing,\n"
            "an unused graph parameter) are printed but do not fail."
        ),
        epilog=(
            "examples:\n"
            "  maskgraph validate graphs/*.yaml             every shipped graph\n"
            "  maskgraph validate my.yaml -p heavy_size=0.02   with an override applied\n"
            "  maskgraph validate -q my.yaml && echo fine      errors only (for scripts)\n"
            "  maskgraph validate --debug bad.yaml             the Python traceback too"
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="graph files (or names of shipped graphs)")
    add_override_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    return p


def run(args) -> int:
    bad = 0
    overrides = parse_overrides(args.overrides)
    for path in args.files:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MaskgraphWarning)
            try:
                g = load_parsed(path, overrides)
            except GraphError as exc:
                if args.debug:
                    raise
                bad += 1
                msg = str(exc) if exc.file else f"{printable(path, limit=None)}: {exc}"
                print(f"error: {one_line(msg)}", file=sys.stderr)
                continue
        for w in caught:
            if issubclass(w.category, MaskgraphWarning):
                print(f"warning: {one_line(f'{printable(path, limit=None)}: {w.message}')}", file=sys.stderr)
        if not args.quiet:
            n = len(g.nodes)
            print(
                f"ok: {printable(path, limit=None)} (graph '{printable(g.name)}', {n} node{'s' if n != 1 else ''})"
            )
    return 1 if bad else 0
