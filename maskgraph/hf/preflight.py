"""What can be checked about a graph on a model before the model's weights load.

:func:`check_graph_fits` takes the model's config (:func:`maskgraph.hf.models.model_config`
reads it without the weights) and, once per distinct layer graph, runs the operators'
``check_model`` hooks (calibration files made for another model) and one small eager call on
random queries, keys and values of the model's head shapes. Whatever a graph would refuse on
its first real call (a parameter the head dim does not allow, such as a ``pq_group_factor``
that does not divide it; a calibration file that is missing or has too few layers) is refused
here, in seconds, instead of after the model has loaded and the dense answer has run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import CalibrationError, DTypeError, NotSupportedError, ShapeError
from ..ir import Graph
from ..lower import compile as mg_compile
from ..registry import get_op

#: Keys and queries of the trial call: enough keys for every shipped graph's estimators.
TRIAL_KEYS = 96
TRIAL_QUERIES = 2


@dataclass(frozen=True)
class HeadShape:
    """The attention shape a graph sees on a model: layers, query and KV heads, head dim."""

    layers: int
    query_heads: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, config: Any) -> HeadShape:
        """From a transformers config (its text config for multimodal ones)."""
        text = getattr(config, "get_text_config", None)
        config = text() if callable(text) else config
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv = getattr(config, "num_key_value_heads", None) or heads
        return cls(config.num_hidden_layers, heads, kv, head_dim)


@dataclass(frozen=True)
class _ConfigOnly:
    """Stands for the model in ``check_model`` hooks, which read only ``model.config``."""

    config: Any


def check_graph_fits(graph: Graph, config: Any) -> None:
    """Raise the graph's own error (a :class:`~maskgraph.errors.MaskgraphError`) unless every
    layer graph of ``graph`` runs on a model with ``config``; loads no weights."""
    shape = HeadShape.of(config)
    for layer, layer_graph in _distinct_layer_graphs(graph, shape.layers).items():
        try:
            for name, node in layer_graph.nodes.items():
                check = get_op(node.op, node=name).check_model
                if check is not None:
                    check(layer_graph.node_params(name), _ConfigOnly(config))
            _trial_call(layer_graph, shape, layer)
        except (CalibrationError, DTypeError, NotSupportedError, ShapeError) as exc:
            where = (
                f"graph {graph.name!r} at layer {layer} of a model with {shape.query_heads} query / "
                f"{shape.kv_heads} KV heads of dim {shape.head_dim}"
            )
            raise type(exc)(f"{where}: {exc}") from None


def _distinct_layer_graphs(graph: Graph, layers: int) -> dict[int, Graph]:
    """First layer index -> its graph, for each distinct graph over the model's layers."""
    seen: dict[str, int] = {}
    out: dict[int, Graph] = {}
    for i in range(layers):
        g = graph.for_layer(i, layers)
        if g is None:
            continue
        text = g.to_yaml()
        if text not in seen:
            seen[text] = i
            out[i] = g
    return out


def _trial_call(graph: Graph, shape: HeadShape, layer: int) -> None:
    """One eager call on random q (1, Hq, 2, D), k and v (1, Hkv, 96, D) as layer ``layer``."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, shape.query_heads, TRIAL_QUERIES, shape.head_dim, generator=gen)
    k = torch.randn(1, shape.kv_heads, TRIAL_KEYS, shape.head_dim, generator=gen)
    v = torch.randn(1, shape.kv_heads, TRIAL_KEYS, shape.head_dim, generator=gen)
    with torch.no_grad():
        mg_compile(graph, backend="eager")(q, k, v, layer_idx=layer)
