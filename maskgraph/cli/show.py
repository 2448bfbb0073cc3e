"""``maskgraph show FILE``: draw a graph (ASCII, table, DOT, Mermaid, SVG/PNG) or its masks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import MaskgraphError
from .common import add_override_arg, load

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
    import argparse

    p = sub.add_parser(
        "show",
        help="draw a graph, or the masks it builds on a prompt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    m.add_argument("--prompt", help="prompt text (default: a built-in sentence)")
    m.add_argument("--prompt-file", metavar="PATH", help="read the prompt from a file")
    m.add_argument("--layer", type=int, help="layer index (default: the middle layer)")
    m.add_argument("--head", type=int, default=0, help="query head to draw (default 0)")
    return p


def render(graph, out: Path) -> None:
    """Write ``graph`` to ``out`` by its suffix (.dot, .mmd, .svg, .png, .pdf)."""
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
    else:
        raise MaskgraphError(f"unknown output type {suffix!r}; use .dot, .mmd, .svg, .png or .pdf")


def show_masks(graph, args) -> None:
    """The --mask mode: capture a layer on the prompt, draw every Mask node."""
    from tqdm.auto import tqdm

    from . import show_mask as sm

    prompt = args.prompt or DEFAULT_PROMPT
    if args.prompt_file:
        path = Path(args.prompt_file)
        if not path.is_file():
            raise MaskgraphError(f"--prompt-file {path}: no such file")
        prompt = path.read_text()
    with tqdm(total=3, desc="show --mask", unit="step", file=sys.stderr, leave=False) as steps:
        model, ids, tokens = sm.load_model_and_ids(args.model, prompt)
        steps.update()
        layer = model.config.num_hidden_layers // 2 if args.layer is None else args.layer
        cap = sm.capture(model, ids, layer, tokens)
        steps.update()
        hq = cap.queries.shape[1]
        if not 0 <= args.head < hq:
            raise MaskgraphError(
                f"--head {args.head} is out of range: layer {layer} has query heads 0..{hq - 1}"
            )
        masks = sm.node_masks(graph, cap)
        steps.update()
    out = Path(args.output) if args.output else Path(f"mask_{graph.name}.png")
    if out.suffix.lower() != ".png":
        raise MaskgraphError(f"--mask draws PNG heatmaps; give -o NAME.png (got {out})")
    length = ids.shape[1]
    title = f"{graph.name} on {args.model}, layer {layer}, head {args.head}, {length} tokens"
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


def run(args) -> int:
    from ..draw import to_ascii

    graph = load(args.file, args.overrides)
    if args.mask:
        show_masks(graph, args)
        return 0
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
