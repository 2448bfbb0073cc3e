"""``maskgraph run``: the main job — a graph against dense attention.

Until the HuggingFace integration lands this runs on synthetic tensors: it prints the graph,
the density of its mask and the relative output error against dense attention.
"""

from __future__ import annotations

import torch

from .common import add_override_arg, load

DEFAULT_GRAPH = "streaming_llm"


def add_parser(sub):
    p = sub.add_parser(
        "run",
        help="run a graph against dense attention (the demo)",
        description="Run a graph against dense attention and report density and output error.",
    )
    p.add_argument("--graph", default=DEFAULT_GRAPH, help=f"graph file or shipped name (default {DEFAULT_GRAPH})")
    add_override_arg(p)
    p.add_argument("--keys", type=int, default=4096, help="context length K (default 4096)")
    p.add_argument("--queries", type=int, default=16, help="queries Q (default 16)")
    p.add_argument("--seed", type=int, default=0)
    return p


def run(args) -> int:
    from ..draw import to_ascii
    from ..lower import compile as mg_compile

    graph = load(args.graph, args.overrides)
    print(to_ascii(graph))
    torch.manual_seed(args.seed)
    b, hq, hkv, d = 1, 8, 2, 64
    q = torch.randn(b, hq, args.queries, d)
    k = torch.randn(b, hkv, args.keys, d)
    v = torch.randn(b, hkv, args.keys, d)
    sparse = mg_compile(graph)
    dense = mg_compile("dense")
    out = sparse(q, k, v)
    ref = dense(q, k, v)
    density = sparse.mask(q, k, v).gt(0).float().mean().item()
    err = ((out - ref).norm() / ref.norm()).item()
    print(f"\nsynthetic tensors B={b} Hq={hq} Hkv={hkv} Q={args.queries} K={args.keys} D={d}")
    print(f"density {density:.4f}   relative output error vs dense {err:.4f}")
    return 0
