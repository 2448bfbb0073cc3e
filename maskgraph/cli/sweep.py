"""``maskgraph sweep``: models × graphs × settings × tasks × lengths from one sweep file, locally
or on Ray, into one resumable store. See :mod:`maskgraph.eval.sweeprun` and docs/sweeps.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import MaskgraphError
from .common import HelpFormatter, positive_int

EPILOG = """\
A sweep file lists models, graphs (each with densities or a parameter grid), tasks, lengths and
samples; docs/sweeps.md describes it and examples/sweep.yaml is one. Re-running with the same
--out runs only the (cell, sample) pairs not finished yet.

examples:
  maskgraph sweep examples/sweep.yaml --out runs/demo
  maskgraph sweep examples/sweep.yaml --out runs/demo --workers 2
  maskgraph sweep gpu.yaml --out runs/demo --gpus 0,1      # 'device: cuda' in gpu.yaml
  maskgraph sweep examples/sweep.yaml --out runs/demo --backend ray --address auto
  maskgraph report runs/demo
  maskgraph sweep tune.yaml --out runs/tune --search    # needs a 'search:' block; writes graphs
"""


def gpu_list(text: str) -> tuple[str, ...]:
    """``"0,1"`` -> ("0", "1"): GPU indices, each an integer >= 0, none twice."""
    parts = [p.strip() for p in text.split(",")]
    if not parts or any(not p.isdigit() for p in parts) or len(set(parts)) != len(parts):
        raise argparse.ArgumentTypeError(f"must list GPU indices like 0,1 (each once), got {text!r}")
    return tuple(parts)


def add_parser(sub):
    p = sub.add_parser(
        "sweep",
        help="run a sweep file (models × graphs × settings × tasks × lengths), locally or on Ray",
        description="Run every trial of a sweep file into one resumable store.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("sweep_file", metavar="SWEEP.yaml", help="the sweep file")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="the sweep's folder (created; resumed if present)"
    )
    p.add_argument(
        "--backend",
        default="local",
        choices=["local", "ray"],
        help="local: this machine, Ray never imported; ray: Ray actors (pip install 'maskgraph[ray]')",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="worker processes (local, default 1) or actors (ray, default: as many as the resources allow)",
    )
    p.add_argument(
        "--gpus",
        type=gpu_list,
        default=None,
        metavar="0,1",
        help="local: one worker per listed GPU, pinned to it",
    )
    p.add_argument("--address", default=None, help="ray: the address of a running cluster (e.g. auto)")
    p.add_argument(
        "--retry-errors", action="store_true", help="rerun failed trials and samples whose row is an error"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="check the sweep file and list its trials; run nothing"
    )
    p.add_argument(
        "--search",
        action="store_true",
        help="instead of the grid: per graph and target density, the parameters with the least output "
        "error at that density (Ray Tune; the file's 'search:' block); writes OUT/search/*.yaml graphs",
    )
    p.add_argument("--no-progress", action="store_true", help="no live progress line")
    return p


def run(args) -> int:
    from ..eval.sweepfile import load_sweep
    from ..eval.sweeprun import BackendOptions, run_sweep

    spec = load_sweep(args.sweep_file)
    options = BackendOptions(args.backend, args.workers, tuple(args.gpus or ()), args.address)
    options.check()
    if options.gpus and spec.settings["device"] != "cuda":
        raise MaskgraphError(
            f"--gpus pins one worker per GPU, each seeing only its own: set 'device: cuda' in "
            f"{args.sweep_file} (it says {spec.settings['device']!r})"
        )
    if args.dry_run:
        trials = spec.trials()
        variants = {v.label for t in trials for v in t.variants}
        print(
            f"{spec.name}: {len(trials)} trials, {len(variants)} variants, {sum(t.pairs for t in trials)} (cell, sample) pairs"
        )
        for t in trials:
            print(f"  {t.id}  {t.model}  {t.task}  L={t.length}  samples {t.start}..{t.stop - 1}")
        return 0
    if args.search:
        return _search(spec, args)
    text = Path(args.sweep_file).read_text(encoding="utf-8")
    summary = run_sweep(
        spec, args.out, text, options, retry_errors=args.retry_errors, progress=not args.no_progress
    )
    print(
        f"{summary.done} of {summary.trials} trials done in {summary.out}; "
        f"'maskgraph report {summary.out}' for tables"
    )
    if summary.failed:
        first = next(iter(summary.failed.items()))
        skipped = f" ({summary.skipped_failed} not retried)" if summary.skipped_failed else ""
        raise MaskgraphError(
            f"{len(summary.failed)} trial(s) failed{skipped}, e.g. {first[0]}: {first[1]}; tracebacks in "
            f"{summary.out}/results.sqlite (table trials) and trials/<id>/error.txt; rerun with --retry-errors"
        )
    return 0


def _search(spec, args) -> int:
    from ..eval.search import run_search

    if args.gpus:
        raise MaskgraphError("--search runs on Ray: give resources.num_gpus in the sweep file, not --gpus")
    choices = run_search(spec, args.out, address=args.address, workers=args.workers)
    for c in choices:
        shown = ", ".join(f"{k}={v}" for k, v in c.overrides.items())
        density = "–" if c.density is None else f"{c.density:.3f}"
        err = "–" if c.rel_err is None else f"{c.rel_err:.4f}"
        note = "" if c.feasible else "  (no setting reached the target; the sparsest is shown)"
        print(
            f"{c.graph} @{c.target:g}: measured density {density}, rel. err {err}, {c.trials} trials: {shown}{note}"
        )
        if c.file:
            print(f"  -> {c.file}")
    return 0
