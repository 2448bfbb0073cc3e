"""``maskgraph show FILE``: draw a graph (ASCII, table, DOT, Mermaid, SVG/PNG) or its masks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..display import printable
from ..errors import MaskgraphError
from ..outputs import writable_file
from .common import (
    HelpFormatter,
    add_override_arg,
    check_model_name,
    fit_to_model,
    load,
    non_negative_int,
    read_text_file,
)

#: File types ``-o`` draws (without --mask).
DRAWINGS = (".dot", ".mmd", ".mermaid", ".svg", ".png", ".pdf")

DEFAULT_PROMPT = (
    "The quick brown fox jumps over the lazy dog. Attention sinks keep the first tokens; a local "
    "window keeps the most recent ones; the heavy hitters are the keys with the largest logits."
)

EPILOG = """\
examples:
  maskgraph show graphs/quest.yaml                     terminal drawing
  maskgraph show quest --table                         node table (execution order)
  maskgraph show quest -o quest.svg                    picture (needs Graphviz 'dot')
  maskgraph show quest -o quest.mmd                    Mermaid text (paste into Markdown)
  maskgraph show oracle_topk --mask --model smollm2 -p sink_size=4 -p window_size=16 \\
      --prompt "a long prompt ..." --layer 10 --head 2 -o masks.png
"""


def add_parser(sub):
    p = sub.add_parser(
        "show",
        help="draw a graph, or the masks it builds on a prompt",
        formatter_class=HelpFormatter,
        description=(
            "Draw a graph. With no option, print it in the terminal.\n"
            "  -o OUT.dot / OUT.mmd   DOT or Mermaid text (no binary needed)\n"
            "  -o OUT.svg / OUT.png   through Graphviz 'dot' (Debian: apt-get install graphviz)\n"
            "  --table                a node table like torch.fx's print_tabular\n"
            "  --source               the generated attention function's Python source\n"
            "  --mask                 run a model on a prompt and draw every Mask node as a heatmap\n"
            "                         (queries down, keys across; PNG to -o, text in the terminal)\n"
            "Nodes are coloured by family (fixed, estimator, selector, sampler, combinator);\n"
            "edges carry 'port: type'; dashed ellipses are the graph inputs."
        ),
        epilog=EPILOG,
    )
    p.add_argument("file", metavar="FILE", help="graph file (or name of a shipped graph, e.g. quest)")
    p.add_argument("-o", "--output", metavar="OUT", help="write a drawing (.dot, .mmd, .svg, .png, .pdf)")
    p.add_argument("--ascii", action="store_true", help="terminal rendering (the default)")
    p.add_argument("--table", action="store_true", help="tabular printout")
    p.add_argument("--source", action="store_true", help="print the generated Python source")
    add_override_arg(p)
    m = p.add_argument_group("masks on a real prompt (--mask)")
    m.add_argument("--mask", action="store_true", help="draw the masks the graph builds on --prompt")
    m.add_argument(
        "--model",
        default="smollm2",
        help="shipped model name (smollm2, qwen2.5-coder-0.5b) or a random test model "
        "(tiny-llama, tiny-qwen2, tiny-gemma3); default smollm2",
    )
    text = m.add_mutually_exclusive_group()
    text.add_argument("--prompt", help="prompt text (default: a built-in sentence)")
    text.add_argument("--prompt-file", metavar="PATH", help="read the prompt from a UTF-8 text file")
    m.add_argument("--layer", type=non_negative_int, help="layer index (default: the middle layer)")
    m.add_argument("--head", type=non_negative_int, default=0, help="query head to draw (default 0)")
    return p


def render(graph, out: Path) -> None:
    """Write ``graph`` to ``out`` by its suffix (.dot, .mmd, .svg, .png, .pdf)."""
    suffix = _drawing_suffix(out)
    out.parent.mkdir(parents=True, exist_ok=True)
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
        extra = ["-Gdpi=110"] if suffix == ".png" else []
        proc = subprocess.run(
            [dot, f"-T{suffix[1:]}", *extra, "-o", str(out)],
            input=graph.to_dot().encode(),
            capture_output=True,
        )
        if proc.returncode != 0:
            raise MaskgraphError(
                f"Graphviz failed to draw {out}: {proc.stderr.decode(errors='replace').strip()}"
            )


def _drawing_suffix(out: Path) -> str:
    """The suffix of a drawing's file name, if it names a format ``render`` writes."""
    suffix = out.suffix.lower()
    if suffix not in DRAWINGS:
        raise MaskgraphError(f"-o {out}: unknown output type {suffix!r}; use {', '.join(DRAWINGS)}")
    return suffix


def _prompt(args) -> str:
    """The --mask prompt: --prompt, --prompt-file's text or the built-in sentence."""
    if args.prompt_file:
        return read_text_file(args.prompt_file, "--prompt-file")
    if args.prompt is None:
        return DEFAULT_PROMPT
    if not args.prompt.strip():
        raise MaskgraphError("--prompt is empty")
    return args.prompt


def _mask_output(graph, args) -> Path:
    """Where --mask writes its PNG, checked before the model loads."""
    out = writable_file(args.output or default_image_name(graph.name), "-o")
    if out.suffix.lower() != ".png":
        raise MaskgraphError(f"--mask draws PNG heatmaps; give -o NAME.png (got {out})")
    return out


def show_masks(graph, args) -> None:
    """The --mask mode: capture a layer on the prompt, draw every Mask node. Everything the
    model's config can tell (layer and head in range, the graph fits, its calibration files
    exist) is checked before the model loads; progress goes to stderr one line a step."""
    from ..hf.models import model_config
    from ..hf.preflight import HeadShape
    from . import show_mask as sm

    prompt = _prompt(args)
    out = _mask_output(graph, args)
    check_model_name(args.model, tiny=True)
    shape = HeadShape.of(model_config(args.model))
    layer = _mask_layer(args, shape.layers)
    _check_head(args.head, layer, shape.query_heads)
    graph = fit_to_model(graph, args.model)
    _say(f"loading model {args.model} ...")
    model, ids, tokens = sm.load_model_and_ids(args.model, prompt)
    _say(f"capturing layer {layer} on {ids.shape[1]} tokens ...")
    cap = sm.capture(model, ids, layer, tokens)
    masks = sm.node_masks(graph, cap)
    length = ids.shape[1]
    title = f"{printable(graph.name)} on {args.model}, layer {layer}, head {args.head}, {length} tokens"
    sm.heatmaps(masks, graph, args.head, out, title)
    print(title)
    for name, m in masks.items():
        print(f"  {name:<20} {graph.nodes[name].op:<18} density {sm.density(m[args.head]):6.1%}")
    print(f"\nfinal mask '{graph.output}' (rows: queries 0..{length - 1}, columns: keys; darker = kept)")
    print(sm.terminal(masks[graph.output][args.head]))
    print(f"wrote {out}")
    if sm.density(masks[graph.output][args.head]) > 0.99 and graph.params:
        print(
            f"note: the graph keeps (almost) every key of this {length}-token prompt; shrink its sizes "
            "(e.g. -p sink_size=4 -p window_size=16) or give a longer --prompt-file to see its structure",
            file=sys.stderr,
        )


def _mask_layer(args, layers: int) -> int:
    """--layer, or the middle layer; a named error when the model has no such layer."""
    layer = layers // 2 if args.layer is None else args.layer
    if not 0 <= layer < layers:
        raise MaskgraphError(f"--layer {layer} is out of range: the model has layers 0..{layers - 1}")
    return layer


def _check_head(head: int, layer: int, heads: int) -> None:
    if not 0 <= head < heads:
        raise MaskgraphError(f"--head {head} is out of range: layer {layer} has query heads 0..{heads - 1}")


def _say(message: str) -> None:
    print(f"[maskgraph] {message}", file=sys.stderr, flush=True)


def run(args) -> int:
    from ..draw import to_ascii

    graph = load(args.file, args.overrides)
    if args.mask:
        show_masks(graph, args)
        return 0
    if args.output:
        render(graph, writable_file(args.output, "-o"))
        print(f"wrote {args.output}")
    if args.table:
        print(graph.tabular())
    if args.source:
        from ..lower import compile as mg_compile

        print(mg_compile(graph).source)
    if args.ascii or not (args.output or args.table or args.source):
        print(to_ascii(graph))
    return 0


def default_image_name(graph_name: str) -> str:
    """``mask_<graph>.png`` in the current folder, the name reduced to letters, digits, ``.``,
    ``_`` and ``-`` (a graph's name is text from its file: never a path)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", graph_name).lstrip(".") or "graph"
    return f"mask_{safe}.png"
