"""``maskgraph report``: markdown leaderboard and PNG plots from ``maskgraph eval`` run
directories. See :mod:`maskgraph.eval.report`."""

from __future__ import annotations

import shlex
from pathlib import Path

from ..eval.report import write_report
from ..outputs import writable_file, writable_folder
from .common import HelpFormatter


def add_parser(sub):
    p = sub.add_parser(
        "report",
        help="leaderboard (markdown) and plots from eval run directories",
        description="Merge one or more 'maskgraph eval' run directories into a leaderboard and plots.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories written by 'maskgraph eval'")
    p.add_argument("--out", default=None, help="markdown file (default: RUN_DIR/report.md of the first run)")
    p.add_argument("--img-dir", default=None, help="where PNGs go (default: beside the markdown)")
    p.add_argument("--prefix", default="", help="file-name prefix of the PNGs")
    return p


def run(args) -> int:
    out = writable_file(args.out or str(Path(args.runs[0]) / "report.md"), "--out")
    img_dir = writable_folder(args.img_dir or str(out.parent), "--img-dir")
    written = write_report(args.runs, out, img_dir, args.prefix, command=_command_line(args))
    print(f"wrote {written['markdown']}" + "".join(f"\nwrote {p}" for p in written["plots"]))
    return 0


def _command_line(args) -> str:
    """The ``maskgraph report`` command line that ``args`` came from, quoted for a shell."""
    argv = ["maskgraph", "report", *args.runs]
    for option, value in (("--out", args.out), ("--img-dir", args.img_dir), ("--prefix", args.prefix)):
        if value:
            argv += [option, value]
    return shlex.join(argv)
