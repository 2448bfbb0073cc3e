"""Entry point: builds the argparse tree from the subcommand modules and turns user errors into
clean messages (``--debug`` shows the traceback)."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from ..errors import MaskgraphError

#: Subcommand modules, in the order ``--help`` lists them. Each defines
#: ``add_parser(subparsers)`` and ``run(args) -> int``.
SUBCOMMANDS = ("validate", "show", "ops", "run", "eval", "report", "bench", "calibrate")

DESCRIPTION = """\
maskgraph: sparse attention for LLMs as DAGs of typed mask operators.

A method is a YAML graph (see graphs/). Typical use:
  maskgraph validate graphs/*.yaml            check graphs, with located errors
  maskgraph show graphs/quest.yaml --ascii    draw a graph in the terminal
  maskgraph ops                               list operators, ports and parameters
  maskgraph run                               demo: dense vs sparse on the default model

Every command has --help. Errors print one line; --debug shows the Python traceback.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskgraph", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f".{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"cli.{name}"):
                continue
            raise
        p = module.add_parser(sub)
        p.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show Python tracebacks for errors",
        )
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return int(args._run(args) or 0)
    except MaskgraphError as exc:
        if args.debug:
            raise
        print(f"maskgraph {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # unreadable input, unwritable output, full disk
        if args.debug:
            raise
        print(f"maskgraph {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
