"""``maskgraph show FILE``: draw a graph (ASCII, table, DOT, Mermaid, SVG/PNG)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import MaskgraphError
from .common import add_override_arg, load


def add_parser(sub):
    p = sub.add_parser(
        "show",
        help="draw a graph",
        description=(
            "Draw a graph. With no option, print it in the terminal.\n"
            "  -o OUT.dot / OUT.mmd   DOT or Mermaid text (no binary needed)\n"
            "  -o OUT.svg / OUT.png   through Graphviz 'dot' (apt-get install graphviz)\n"
            "  --table                a node table like torch.fx's print_tabular\n"
            "  --source               the generated attention function's Python source"
        ),
    )
    p.add_argument("file", metavar="FILE", help="graph file (or name of a shipped graph)")
    p.add_argument("-o", "--output", metavar="OUT", help="write a drawing (.dot, .mmd, .svg, .png)")
    p.add_argument("--ascii", action="store_true", help="terminal rendering (the default)")
    p.add_argument("--table", action="store_true", help="tabular printout")
    p.add_argument("--source", action="store_true", help="print the generated Python source")
    add_override_arg(p)
    return p


def render(graph, out: Path) -> None:
    """Write ``graph`` to ``out`` by its suffix."""
    suffix = out.suffix.lower()
    if suffix == ".dot":
        out.write_text(graph.to_dot())
    elif suffix in (".mmd", ".mermaid"):
        out.write_text(graph.to_mermaid())
    elif suffix in (".svg", ".png", ".pdf"):
        dot = shutil.which("dot")
        if dot is None:
            raise MaskgraphError(
                "drawing SVG/PNG needs Graphviz's 'dot' (Debian: apt-get install graphviz); "
                "or write .dot / .mmd text instead"
            )
        subprocess.run(
            [dot, f"-T{suffix[1:]}", "-o", str(out)], input=graph.to_dot().encode(), check=True
        )
    else:
        raise MaskgraphError(f"unknown output type {suffix!r}; use .dot, .mmd, .svg, .png or .pdf")


def run(args) -> int:
    from ..draw import to_ascii

    graph = load(args.file, args.overrides)
    if args.output:
        render(graph, Path(args.output))
        print(f"wrote {args.output}")
    if args.table:
        print(graph.tabular())
    if args.source:
        from ..lower import compile as mg_compile

        print(mg_compile(graph).source)
    if args.ascii or not (args.output or args.table or args.source):
        print(to_ascii(graph))
    return 0
