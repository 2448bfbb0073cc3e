"""maskgraph: sparse attention as a DAG of typed mask operators.

import maskgraph as mg
g = mg.load_graph("graphs/streaming_llm.yaml", overrides={"window_size": 256})
attn = mg.compile(g, backend="eager", mode="simulate")
out = attn(queries, keys, values)          # (B, Hq, Q, D)
p = attn.mask(queries, keys, values)       # (B, Hq, Q, K) inclusion probabilities
"""

from __future__ import annotations

from . import ops  # noqa: F401  (importing the package registers the built-in operators)
from .attention import attend, gqa_logits, masked_partial
from .errors import (
    CalibrationError,
    CycleError,
    DTypeError,
    GraphError,
    MaskgraphError,
    MaskgraphWarning,
    NotSupportedError,
    OutputError,
    OverrideError,
    ParameterError,
    ShapeError,
    UnknownOperatorError,
    WiringError,
    YAMLSyntaxError,
)
from .ir import Graph, Node
from .loader import load_graph, shipped_graphs
from .lower import CompiledAttention, compile
from .registry import Param, Port, all_ops, get_op, operator
from .state import State
from .types import PortType

__version__ = "0.1.0"


def inject(model, graph, **kwargs):
    """Route a transformers model's attention through ``graph`` (see :mod:`maskgraph.hf`)."""
    from .hf import inject as _inject

    return _inject(model, graph, **kwargs)


__all__ = [
    "CalibrationError",
    "CompiledAttention",
    "CycleError",
    "DTypeError",
    "Graph",
    "GraphError",
    "MaskgraphError",
    "MaskgraphWarning",
    "Node",
    "NotSupportedError",
    "OutputError",
    "OverrideError",
    "Param",
    "ParameterError",
    "Port",
    "PortType",
    "ShapeError",
    "State",
    "UnknownOperatorError",
    "WiringError",
    "YAMLSyntaxError",
    "all_ops",
    "attend",
    "compile",
    "get_op",
    "gqa_logits",
    "inject",
    "load_graph",
    "masked_partial",
    "operator",
    "shipped_graphs",
]


def __getattr__(name: str):
    # ``mg.hf`` (HuggingFace integration) is imported on first use.
    if name == "hf":
        import importlib

        return importlib.import_module(".hf", __name__)
    raise AttributeError(f"module 'maskgraph' has no attribute {name!r}")
