"""Entry point: builds the argparse tree from the subcommand modules and turns every error into
one line on stderr and a non-zero exit status (``--debug`` shows the traceback instead)."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from ..errors import MaskgraphError, MaskgraphWarning
from .common import add_debug_arg, one_line

#: Subcommand modules, in the order ``--help`` lists them. Each defines
#: ``add_parser(subparsers)`` and ``run(args) -> int``.
SUBCOMMANDS = ("validate", "show", "ops", "run", "eval", "sweep", "report", "bench", "calibrate")

DESCRIPTION = """\
maskgraph: sparse attention for LLMs as DAGs of typed mask operators.

A method is a YAML graph (see graphs/). Typical use:
  maskgraph validate graphs/*.yaml            check graphs, with located errors
  maskgraph show graphs/quest.yaml --ascii    draw a graph in the terminal
  maskgraph ops                               list operators, ports and parameters
  maskgraph run                               demo: dense vs sparse on the default model

Every command has --help. Errors print one line; --debug shows the Python traceback.
"""


#: Exit statuses (docs/guarantees.md): 2 is argparse's for a bad command line.
EXIT_ERROR, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 2, 3, 130


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
        add_debug_arg(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; every error ends as one line on stderr and a non-zero status
    (with ``--debug``, the exception propagates with its traceback)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            if not args.debug:
                warnings.showwarning = _warning_printer(args.command)
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        status, message = describe(exc)
        print(f"maskgraph {args.command}: {one_line(message)}", file=sys.stderr)
        return status


def describe(exc: Exception) -> tuple[int, str]:
    """(exit status, message) for an exception that ended a command."""
    if isinstance(exc, MaskgraphError):
        return EXIT_ERROR, f"error: {exc}"
    if isinstance(exc, OSError):  # unreadable input, unwritable output, full disk
        return EXIT_ERROR, f"error: {_os_error(exc)}"
    return EXIT_INTERNAL, (
        f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)"
    )


def _os_error(exc: OSError) -> str:
    if exc.filename is None or not exc.strerror:
        return str(exc)
    target = f" -> {exc.filename2}" if exc.filename2 is not None else ""
    return f"{exc.filename}{target}: {exc.strerror}"


def _warning_printer(command: str):
    """``warnings.showwarning`` that prints one line per warning, ``maskgraph CMD: warning: ...``."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        kind = "" if issubclass(category, MaskgraphWarning) else f"{category.__name__}: "
        print(f"maskgraph {command}: warning: {one_line(kind + str(message))}", file=file or sys.stderr)

    return show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
