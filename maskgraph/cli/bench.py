"""``maskgraph bench``: front end for the benchmark scripts in ``benchmarks/``."""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path

from ..errors import MaskgraphError
from .common import HelpFormatter

SCRIPTS = {
    "attention": "one attention call: dense SDPA vs each graph (simulate), compiled and eager",
    "generate": "model.generate inside mg.inject vs plain SDPA: time to first token, ms per token",
    "decode_graph": "per generated token, the whole decode step recorded as one CUDA graph",
    "sparse": "one decode call in sparse mode vs dense SDPA, with bytes/FLOP ceilings",
    "attend_paths": "the pieces of one simulate decode call at K and K + 1 keys",
    "sweeps": "Ray sweeps: fractional GPUs on one card; 1 GPU vs all, a lost actor, the rerun",
}


def add_parser(sub):
    lines = "\n".join(f"  {name:<12} {what}" for name, what in SCRIPTS.items())
    p = sub.add_parser(
        "bench",
        help="speed and memory benchmarks (GPU; --quick on the CPU)",
        description=(
            "Run a benchmark script from benchmarks/. Everything after the name goes to the script;\n"
            "each prints a Markdown table last and writes JSON to $OUT (or benchmarks/out/).\n\n"
            f"{lines}\n\n"
            "Examples:\n"
            "  maskgraph bench attention --quick                  # tiny CPU smoke run\n"
            "  maskgraph bench sparse --graphs quest --kv-lens 131072\n"
            "  maskgraph bench decode_graph -- --help             # the script's own options\n"
            "Set MG_BENCH_BUDGET=SECONDS to stop between cases after that long. A case that fails is one\n"
            "line on stderr and a row with its error (--debug, or MG_BENCH_TRACEBACKS=1: the traceback).\n"
            "What each mode costs: docs/performance.md."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("script", choices=sorted(SCRIPTS), help="which benchmark")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")
    return p


def scripts_dir() -> Path:
    """The repository's benchmarks/ folder (present in a source checkout)."""
    folder = Path(__file__).resolve().parents[2] / "benchmarks"
    if not (folder / "common.py").exists():
        raise MaskgraphError(
            "the benchmark scripts live in the repository's benchmarks/ folder, which this "
            "installation does not have; run from a clone (pip install -e .)"
        )
    return folder


def run(args) -> int:
    path = scripts_dir() / f"{args.script}.py"
    argv = [a for a in args.script_args if a != "--"]
    old = sys.argv
    sys.argv = [str(path), *argv]
    if getattr(args, "debug", False):  # a failed case prints its traceback, not one line
        os.environ["MG_BENCH_TRACEBACKS"] = "1"
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        sys.argv = old
    return 0
