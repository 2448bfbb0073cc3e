"""``maskgraph calibrate double-sparsity|hashattention``: make the calibration files those methods
read, from a model and some text (nothing is downloaded)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .common import HelpFormatter, add_debug_arg, positive_int

DESCRIPTION = """\
Make calibration files from a model and some text:
  double-sparsity  per layer and KV head, channels ranked by importance (label channels)
  hashattention    per-head hash MLPs trained so that bit agreement ranks keys as q.k does

Default output: ~/.cache/maskgraph/calibration/<model>/<method>.safetensors
"""


def _common(p: argparse.ArgumentParser, tokens: int, window: int) -> None:
    from ..calibrate.models import DEFAULT_MODEL

    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"shipped model name, or a folder saved by save_pretrained (default {DEFAULT_MODEL})",
    )
    p.add_argument("--text", metavar="FILE", help="calibration text (default: the shipped demo text)")
    p.add_argument(
        "--tokens", type=positive_int, default=tokens, help=f"tokens of the text to use (default {tokens})"
    )
    p.add_argument(
        "--window",
        type=positive_int,
        default=window,
        help=f"tokens per independent sequence (default {window})",
    )
    p.add_argument(
        "--out", metavar="FILE", help="output .safetensors (default: in the user cache, see above)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="windows per forward pass (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_debug_arg(p)


def add_parser(sub):
    p = sub.add_parser(
        "calibrate",
        help="make calibration files (Double Sparsity channels, HashAttention weights)",
        description=DESCRIPTION,
        formatter_class=HelpFormatter,
    )
    methods = p.add_subparsers(dest="method", metavar="METHOD", required=True)

    ds = methods.add_parser(
        "double-sparsity",
        help="rank channels per layer and KV head",
        description="Rank the channels of every layer and KV head by their mean contribution to q.k.",
        formatter_class=HelpFormatter,
    )
    _common(ds, tokens=2048, window=512)
    ds.add_argument(
        "--statistic",
        choices=("pairwise", "diagonal"),
        default="pairwise",
        help="pairwise: mean |q_c|.|k_c| over causal (query, key) pairs; "
        "diagonal: mean |q_c.k_c| over same-token pairs (default pairwise)",
    )

    from ..calibrate.hashattention import HashConfig

    d = HashConfig()
    hat = methods.add_parser(
        "hashattention",
        help="train per-head hash MLPs",
        description="Train per-head query/key MLPs whose sign bits rank keys as q.k does;\n"
        "prints the top-k recall on held-out windows.",
        formatter_class=HelpFormatter,
    )
    _common(hat, tokens=2048, window=512)
    hat.add_argument("--hat-bits", type=int, default=d.hat_bits, help=f"bits per code (default {d.hat_bits})")
    hat.add_argument("--hidden", type=int, default=d.hidden, help=f"MLP hidden width (default {d.hidden})")
    hat.add_argument("--top-k", type=int, default=d.top_k, help=f"exact top-k to learn (default {d.top_k})")
    hat.add_argument(
        "--sink", type=int, default=d.sink, help=f"first keys left out of the ranking (default {d.sink})"
    )
    hat.add_argument(
        "--local", type=int, default=d.local, help=f"recent keys left out of the ranking (default {d.local})"
    )
    hat.add_argument(
        "--hard-negatives",
        type=int,
        default=d.hard_negatives,
        help=f"keys ranked just below the top-k added to each training softmax (default {d.hard_negatives})",
    )
    hat.add_argument("--steps", type=int, default=d.steps, help=f"Adam steps per layer (default {d.steps})")
    hat.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr})")
    hat.add_argument(
        "--held-out", type=float, default=d.held_out, help=f"share of windows held out (default {d.held_out})"
    )
    return p


def run(args) -> int:
    from ..calibrate import models
    from ..calibrate.formats import DOUBLE_SPARSITY, HASHATTENTION
    from ..calibrate.text import read_text
    from ..outputs import writable_file

    label = models.model_label(args.model)
    kind = DOUBLE_SPARSITY if args.method == "double-sparsity" else HASHATTENTION
    out = writable_file(args.out or models.default_out(label, kind), what="--out")
    torch.manual_seed(args.seed)
    text = read_text(args.text)
    model, tokenizer = models.load(args.model, seed=args.seed)
    common = dict(
        tokens=args.tokens,
        window=args.window,
        batch_size=args.batch_size,
        model_name=label,
        progress=not args.no_progress,
    )
    if args.method == "double-sparsity":
        return _double_sparsity(args, model, tokenizer, text, out, common)
    return _hashattention(args, model, tokenizer, text, out, common)


def _double_sparsity(args, model, tokenizer, text, out: Path, common) -> int:
    from ..calibrate.double_sparsity import calibrate_double_sparsity
    from ..calibrate.text import default_text_path

    result = calibrate_double_sparsity(model, tokenizer, text, statistic=args.statistic, **common)
    result.metadata["text"] = Path(args.text).name if args.text else default_text_path().name
    path = result.save(out)
    layers, hkv, d = result.channels.shape
    print(
        f"double sparsity: {layers} layers x {hkv} KV heads x {d} channels from {result.metadata['tokens']} tokens"
    )
    for layer in sorted({0, layers // 2, layers - 1}):
        print(f"  layer {layer:3d} KV head 0: top channels {result.channels[layer, 0, :8].tolist()}")
    print(f"wrote {path}")
    return 0


def _hashattention(args, model, tokenizer, text, out: Path, common) -> int:
    from ..calibrate.hashattention import HashConfig, calibrate_hashattention
    from ..calibrate.text import default_text_path

    cfg = HashConfig(
        hat_bits=args.hat_bits,
        hidden=args.hidden,
        top_k=args.top_k,
        sink=args.sink,
        local=args.local,
        hard_negatives=args.hard_negatives,
        steps=args.steps,
        lr=args.lr,
        held_out=args.held_out,
        seed=args.seed,
    )
    result = calibrate_hashattention(model, tokenizer, text, config=cfg, **common)
    result.metadata["text"] = Path(args.text).name if args.text else default_text_path().name
    path = result.save(out)
    per_layer = " ".join(f"{r.recall:.2f}" for r in result.reports)
    print(f"hashattention: {len(result.reports)} layers, {cfg.hat_bits} bits, hidden {cfg.hidden}")
    print(f"  held-out top-{cfg.top_k} recall {result.recall:.4f} (chance {result.random_recall:.4f})")
    print(f"  per layer: {per_layer}")
    print(f"wrote {path}")
    return 0
