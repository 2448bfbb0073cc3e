"""``maskgraph show FILE --mask``: the masks a graph builds on a real prompt.

One forward pass of the model captures the post-RoPE queries, keys and values of one layer
(through a small attention function registered with ``transformers.AttentionInterface``);
every Mask node of the graph is then evaluated on them and drawn as a heatmap
(queries × keys) for one head, plus a compact terminal rendering of the final mask.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import MaskgraphError
from ..ir import Graph
from ..registry import get_op
from ..types import PortType

CAPTURE_NAME = "maskgraph_show_capture"
TINY_PREFIX = "tiny-"

_target: list[tuple[int, dict]] = []


@dataclass
class Captured:
    """One layer's attention inputs: queries (1, Hq, L, D), keys/values (1, Hkv, L, D), float32."""

    queries: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    scaling: float
    tokens: list[str]


def _capture_attention(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    for layer, box in _target:
        if getattr(module, "layer_idx", None) == layer:
            box["q"], box["k"], box["v"] = query.detach(), key.detach(), value.detach()
            box["scaling"] = kwargs.get("scaling") or getattr(module, "scaling", None)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


@contextmanager
def _capturing(model, layer: int, box: dict):
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(CAPTURE_NAME, _capture_attention)
    AttentionMaskInterface.register(CAPTURE_NAME, sdpa_mask)
    previous = model.config._attn_implementation
    model.set_attn_implementation(CAPTURE_NAME)
    _target.append((layer, box))
    try:
        yield
    finally:
        _target.pop()
        model.set_attn_implementation(previous)


def load_model_and_ids(name: str, prompt: str):
    """``(model, input_ids (1, L), token strings)``. ``tiny-llama`` etc. are random test models
    whose tokens are the prompt's bytes."""
    if name.startswith(TINY_PREFIX):
        from ..hf.models import tiny_model

        model = tiny_model(name[len(TINY_PREFIX) :])
        data = prompt.encode("utf-8")
        ids = torch.tensor([[b % model.config.vocab_size for b in data]])
        return model, ids, [chr(b) if 32 <= b < 127 else "?" for b in data]
    from ..hf.models import load_model

    model, tokenizer = load_model(name)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    return model, ids, tokenizer.convert_ids_to_tokens(ids[0])


def capture(model, ids: torch.Tensor, layer: int, tokens: list[str]) -> Captured:
    """Run the model once on ``ids`` and return layer ``layer``'s attention inputs."""
    n_layers = model.config.num_hidden_layers
    if not 0 <= layer < n_layers:
        raise MaskgraphError(f"--layer {layer} is out of range: the model has layers 0..{n_layers - 1}")
    box: dict = {}
    with torch.inference_mode(), _capturing(model, layer, box):
        model(input_ids=ids, use_cache=False)
    if "q" not in box:
        raise MaskgraphError(f"layer {layer} did not run its attention through the capture function")
    d = box["q"].shape[-1]
    scaling = float(box["scaling"]) if box["scaling"] is not None else d**-0.5
    return Captured(box["q"].float(), box["k"].float(), box["v"].float(), scaling, tokens)


def subgraph(graph: Graph, output: str) -> Graph:
    """The part of ``graph`` that computes node ``output``, with ``output`` as its output."""
    import networkx as nx

    from ..loader import load_graph

    keep = nx.ancestors(graph.nx(), output) | {output}
    data = graph.to_dict()
    data["nodes"] = [n for n in data["nodes"] if n["name"] in keep]
    data["output"] = output
    data.pop("layers", None)
    used = {
        v[1:]
        for n in data["nodes"]
        for v in (n.get("params") or {}).values()
        if isinstance(v, str) and v[:1] == "$"
    }
    data["params"] = {k: v for k, v in graph.params.items() if k in used}
    if not data["params"]:
        data.pop("params")
    return load_graph(data)


def mask_nodes(graph: Graph) -> list[str]:
    """Names of the graph's Mask-typed nodes in execution order (the output last)."""
    names = [n for n in graph.topo_order() if get_op(graph.nodes[n].op, node=n).output == PortType.MASK]
    return [n for n in names if n != graph.output] + [graph.output]


def node_masks(graph: Graph, cap: Captured) -> dict[str, torch.Tensor]:
    """Every Mask node's (Hq, L, L) mask for the captured prompt (causal prefill)."""
    from ..lower import compile as mg_compile
    from ..state import State

    length = cap.queries.shape[2]
    pos = torch.arange(length)
    causal = torch.zeros(length, length).masked_fill(pos.view(1, -1) > pos.view(-1, 1), float("-inf"))
    causal = causal.view(1, 1, length, length)
    out = {}
    for name in mask_nodes(graph):
        attn = mg_compile(subgraph(graph, name))
        p = attn.mask(cap.queries, cap.keys, cap.values, causal, cap.scaling, state=State())
        out[name] = p[0]
    return out


def density(mask: torch.Tensor) -> float:
    """Share of causally visible (query, key) pairs with p > 0; mask (Hq, L, L) or (L, L)."""
    length = mask.shape[-1]
    visible = torch.ones(length, length).tril().bool()
    return float(((mask > 0) & visible).sum() / (visible.sum() * (mask.numel() // (length * length))))


def heatmaps(masks: dict[str, torch.Tensor], graph: Graph, head: int, out: Path, title: str) -> None:
    """One PNG: a heatmap per Mask node (queries down, keys across), the output last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(masks)
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows + 0.6), squeeze=False)
    image = None
    import numpy as np
    from matplotlib.colors import ListedColormap

    # p = 0 is white ("under"), any p > 0 starts at a visible blue; grey ("bad"): future keys.
    blues = plt.get_cmap("Blues")(np.linspace(0.3, 1.0, 256))
    cmap = ListedColormap(blues).with_extremes(under="white", bad="#d9d9d9")
    for ax, name in zip(axes.flat, names):
        m = masks[name][head].numpy()
        future = np.triu(np.ones_like(m, dtype=bool), k=1 + m.shape[1] - m.shape[0])
        shown = np.ma.masked_array(m, mask=future)
        image = ax.imshow(shown, cmap=cmap, vmin=1e-6, vmax=1.0, interpolation="nearest", aspect="auto")
        op = graph.nodes[name].op
        star = "  (output)" if name == graph.output else ""
        ax.set_title(f"{name}: {op}{star}\ndensity {density(masks[name][head]):.1%}", fontsize=10)
        ax.set_xlabel("key position", fontsize=9)
        ax.set_ylabel("query position", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(title + "\n(grey: future keys the causal mask hides)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    cax = fig.add_axes((0.935, 0.15, 0.015, 0.7))
    fig.colorbar(image, cax=cax).set_label("inclusion probability p (white: 0)", fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


RAMP = " .:-=+*#%@"


def terminal(mask: torch.Tensor, width: int = 64, height: int = 24) -> str:
    """A (L, K) mask as text: each character is the mean probability of a block of cells."""
    rows_n, cols_n = mask.shape
    h, w = min(height, rows_n), min(width, cols_n)
    pooled = torch.nn.functional.adaptive_avg_pool2d(mask.float().view(1, 1, rows_n, cols_n), (h, w))[0, 0]
    lines = []
    for row in pooled:
        lines.append("|" + "".join(_shade(float(x)) for x in row) + "|")
    return "\n".join(lines)


def _shade(x: float) -> str:
    if x <= 0.0:
        return RAMP[0]
    return RAMP[max(1, min(len(RAMP) - 1, round(x * (len(RAMP) - 1))))]
