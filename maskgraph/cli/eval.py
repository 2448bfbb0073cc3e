"""``maskgraph eval``: how much quality each graph keeps (RULER-style tasks, the standard
benchmarks read from a local copy, perplexity, micro metrics), into a resumable run directory.
See :mod:`maskgraph.eval.runner`."""

from __future__ import annotations

from ..eval.bench import BENCHMARKS
from ..eval.calibration import default_calibration
from ..eval.runner import PPL, EvalConfig, run_eval
from ..eval.tasks import TASKS
from ..loader import load_graph
from ..overrides import apply_overrides
from .common import (
    DEVICES,
    HelpFormatter,
    add_override_arg,
    check_model_name,
    device,
    fit_to_model,
    parse_overrides,
    positive_int,
    share,
)

EPILOG = """\
tasks: ppl (perplexity on long text), {tasks}
standard benchmarks, as <benchmark>:<sub-task> with --data PATH (a local copy; see
docs/benchmarks-data.md for the files):
{benchmarks}
density sweep (--densities): see maskgraph/eval/sweep.py for the rule; the measured density is
what gets reported. Re-running with the same --out skips finished (cell, sample) pairs.

example:
  maskgraph eval --model smollm2 --graph graphs/dense.yaml graphs/quest.yaml \\
      --task niah_single_number vt cwe ppl --lengths 1024 --samples 3 --densities 0.05 0.2 \\
      --metrics --out runs/demo
  maskgraph report runs/demo
  maskgraph eval --model smollm2 --graph quest --task longbench:qasper longbench:trec \\
      --data ~/data/LongBench --lengths 4096 --samples 20 --out runs/longbench
"""


def _benchmark_lines() -> str:
    return "\n".join(f"  {b.name}: {', '.join(b.subtasks)}" for b in BENCHMARKS.values())


def add_parser(sub):
    p = sub.add_parser(
        "eval",
        help="measure the quality each graph keeps (RULER-style tasks, perplexity, micro metrics)",
        description="Evaluate graphs against dense attention on a shipped model.",
        epilog=EPILOG.format(tasks=", ".join(TASKS), benchmarks=_benchmark_lines()),
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", default="smollm2", help="shipped model name")
    p.add_argument(
        "--graph", nargs="+", required=True, metavar="FILE", help="graph YAML files or shipped names"
    )
    p.add_argument(
        "--task",
        nargs="+",
        default=["niah_single_number", PPL],
        metavar="TASK",
        help=f"tasks to run (default: niah_single_number {PPL})",
    )
    add_override_arg(p)
    p.add_argument("--samples", type=positive_int, default=3, help="samples (or perplexity windows) per cell")
    p.add_argument(
        "--lengths",
        type=positive_int,
        nargs="+",
        default=[1024],
        metavar="L",
        help="context lengths in tokens (default: 1024)",
    )
    p.add_argument(
        "--densities",
        type=share,
        nargs="*",
        default=[],
        metavar="D",
        help="target densities in (0, 1] (sweep; default: each graph's own parameters)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the generated task samples, and (with the cell and sample) of the draws of graphs whose seed is null",
    )
    p.add_argument(
        "--out", required=True, metavar="RUN_DIR", help="run directory (created; resumed if present)"
    )
    p.add_argument("--device", type=device, default="cpu", help=f"torch device ({DEVICES})")
    p.add_argument(
        "--protocol",
        default="dense_prefill",
        choices=["dense_prefill", "sparse"],
        help="dense_prefill: context dense, question and answer through the graph; sparse: all through it",
    )
    p.add_argument(
        "--metrics", action="store_true", help="also measure output error and recall (a dense pass per call)"
    )
    p.add_argument("--template", default="chat", choices=["chat", "plain"], help="prompt wrapping")
    p.add_argument("--text-file", default=None, help="perplexity text (default: KJV Genesis from Debian)")
    p.add_argument(
        "--ppl-score-share",
        type=share,
        default=0.25,
        metavar="S",
        help="share of each perplexity window that goes through the graph and is scored, after a dense "
        "context of the rest (default 0.25: an 8K window scores its last 2K tokens)",
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="local copy of the benchmark tasks' files (JSONL, Parquet or a datasets.save_to_disk folder)",
    )
    p.add_argument("--retry-errors", action="store_true", help="rerun samples whose cell ended in an error")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    check_model_name(args.model)
    overrides = parse_overrides(args.overrides)
    overrides.update(_default_calibration(args.graph, overrides, args.model))
    config = EvalConfig(
        model=args.model,
        graphs=list(args.graph),
        tasks=list(args.task),
        lengths=list(args.lengths),
        samples=args.samples,
        seed=args.seed,
        overrides=overrides,
        densities=list(args.densities),
        protocol=args.protocol,
        device=args.device,
        metrics=args.metrics,
        template=args.template,
        ppl_score_share=args.ppl_score_share,
        text_file=args.text_file,
        data=args.data,
    )
    metrics = run_eval(config, args.out, progress=not args.no_progress, retry_errors=args.retry_errors)
    bad = sum(c["status"] != "ok" for c in metrics["cells"].values())
    print(
        f"{len(metrics['cells'])} cells ({bad} not ok) in {args.out}; 'maskgraph report {args.out}' for tables"
    )
    return 0


def _default_calibration(graphs: list[str], overrides: dict, model: str) -> dict:
    """Graph parameters that point the graphs' unset calibration files at those ``maskgraph
    calibrate`` wrote for ``model`` (:func:`maskgraph.eval.calibration.default_calibration`);
    every graph is first tried on the model's shapes (:func:`~maskgraph.cli.common.fit_to_model`),
    before the model loads."""
    bases = {path: load_graph(path) for path in dict.fromkeys(graphs)}
    for base in bases.values():
        graph = apply_overrides(base, {k: v for k, v in overrides.items() if k in base.params}, origin="-p")
        fit_to_model(graph, model)
    return default_calibration(bases, overrides, model)
