"""The graph IR: nodes wired by name, a ``params:`` block of defaults, one output.

A :class:`Graph` is plain data (it compares equal after a YAML round trip); networkx gives the
structure (:meth:`Graph.nx`), :mod:`maskgraph.validate` checks it, :mod:`maskgraph.lower`
turns it into code, :mod:`maskgraph.draw` draws it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .errors import MaskgraphError
from .overrides import apply_overrides
from .types import GRAPH_INPUTS, PARAM_REF


@dataclass
class Node:
    """One operator application.

    ``inputs`` maps port name -> source (a node name or a graph input name; a list for a
    variadic port). ``params`` maps parameter name -> value or ``"$name"`` (a reference into
    the graph's ``params:`` block).
    """

    name: str
    op: str
    inputs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def sources(self) -> list[str]:
        """All source names this node reads, in port order."""
        out: list[str] = []
        for src in self.inputs.values():
            out.extend(src if isinstance(src, list) else [src])
        return out


@dataclass
class LayerRules:
    """Which layers a graph applies to and per-layer parameter overrides.

    ``dense``: layer indices that keep dense attention. ``overrides``: layer index -> params
    overrides (applied on top of the graph's ``params:`` block for that layer). ``pyramid``:
    None, or ``{"param": name, "beta": β}``: the size parameter ``name`` shrinks linearly with
    depth around its value as the mean (PyramidKV, :func:`pyramid_size`).
    """

    dense: list[int] = field(default_factory=list)
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    pyramid: dict[str, Any] | None = None

    def is_empty(self) -> bool:
        return not self.dense and not self.overrides and self.pyramid is None


def pyramid_size(mean: int | float, beta: float, layer_idx: int, num_layers: int) -> int | float:
    """PyramidKV's budget of layer ``layer_idx`` of ``num_layers`` for a mean budget ``mean``:
    linear in depth from ``2·mean − mean/β`` at layer 0 to ``mean/β`` at the last layer (a share
    whose first layer would pass 1 starts at 1 and ends at 2·mean − 1). A share stays a share
    (float in (0, 1]); a token count is rounded, at least 1."""
    low = mean / beta
    high = 2 * mean - low
    if isinstance(mean, float) and high > 1.0:
        high, low = 1.0, 2 * mean - 1.0
    size = high if num_layers <= 1 else high - layer_idx * (high - low) / (num_layers - 1)
    if isinstance(mean, float):
        return min(1.0, max(size, 1e-12))
    return max(1, round(size))


@dataclass
class Graph:
    """A validated sparse-attention method: a DAG of operators with one Mask output."""

    name: str
    nodes: dict[str, Node]
    output: str
    params: dict[str, Any] = field(default_factory=dict)
    doc: str = ""
    layers: LayerRules = field(default_factory=LayerRules)
    source: str | None = field(default=None, compare=False, repr=False)
    lines: dict[tuple, int] = field(default_factory=dict, compare=False, repr=False)

    # ----- structure -------------------------------------------------------------------------
    def nx(self) -> nx.DiGraph:
        """The graph as a networkx DiGraph (graph inputs included as nodes of kind 'input')."""
        g = nx.DiGraph()
        for name in GRAPH_INPUTS:
            g.add_node(name, kind="input")
        for node in self.nodes.values():
            g.add_node(node.name, kind="op", op=node.op)
        for node in self.nodes.values():
            for port, src in node.inputs.items():
                for s in src if isinstance(src, list) else [src]:
                    g.add_edge(s, node.name, port=port)
        return g

    def topo_order(self) -> list[str]:
        """Operator node names in a topological order (stable: file order breaks ties)."""
        order = {n: i for i, n in enumerate(self.nodes)}
        g = self.nx()
        ordered = nx.lexicographical_topological_sort(g, key=lambda n: order.get(n, -1))
        return [n for n in ordered if n in self.nodes]

    def resolve(self, value: Any) -> Any:
        """Resolve a ``$name`` reference against the ``params:`` block."""
        if isinstance(value, str) and value.startswith(PARAM_REF) and value[1:] in self.params:
            return self.params[value[1:]]
        return value

    def node_params(self, name: str) -> dict[str, Any]:
        """The node's parameters with references resolved and defaults filled in."""
        from .registry import check_params, get_op

        node = self.nodes[name]
        given = {k: self.resolve(v) for k, v in node.params.items()}
        return check_params(get_op(node.op, node=name), given, node=name)

    # ----- variants ----------------------------------------------------------------------------
    def with_overrides(self, overrides: dict[str, Any] | None) -> Graph:
        """A copy whose ``params:`` block is updated; unknown names raise OverrideError."""
        return apply_overrides(self, overrides or {})

    def for_layer(self, layer_idx: int, num_layers: int | None = None) -> Graph | None:
        """The graph to use at ``layer_idx`` of ``num_layers``: ``None`` where the layer stays
        dense. A ``pyramid`` rule needs ``num_layers`` (a MaskgraphError without it, where the
        rule sets the layer's value)."""
        if layer_idx in self.layers.dense:
            return None
        extra = dict(self.layers.overrides.get(layer_idx) or {})
        rule = self.layers.pyramid
        if rule is not None and rule["param"] not in extra:
            if num_layers is None:
                raise MaskgraphError(
                    f"graph '{self.name}': its 'layers.pyramid' rule sets parameter "
                    f"'{rule['param']}' by depth, so for_layer({layer_idx}) needs the model's layer "
                    f"count: pass num_layers (for_layer({layer_idx}, num_layers))"
                )
            mean = self.params[rule["param"]]
            extra[rule["param"]] = pyramid_size(mean, rule["beta"], layer_idx, num_layers)
        if not extra:
            return self
        return self.with_overrides(extra)

    # ----- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data as written in YAML."""
        out: dict[str, Any] = {"graph": self.name}
        if self.doc:
            out["doc"] = self.doc
        if self.params:
            out["params"] = copy.deepcopy(self.params)
        nodes = []
        for node in self.nodes.values():
            item: dict[str, Any] = {"name": node.name, "op": node.op}
            if node.inputs:
                item["inputs"] = copy.deepcopy(node.inputs)
            if node.params:
                item["params"] = copy.deepcopy(node.params)
            nodes.append(item)
        out["nodes"] = nodes
        out["output"] = self.output
        if not self.layers.is_empty():
            layers: dict[str, Any] = {}
            if self.layers.dense:
                layers["dense"] = list(self.layers.dense)
            if self.layers.overrides:
                layers["overrides"] = {int(k): dict(v) for k, v in self.layers.overrides.items()}
            if self.layers.pyramid is not None:
                layers["pyramid"] = dict(self.layers.pyramid)
            out["layers"] = layers
        return out

    def to_yaml(self) -> str:
        """YAML text that :func:`maskgraph.load_graph` reads back to an equal graph."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)

    def to_dot(self) -> str:
        """Graphviz DOT text (see :mod:`maskgraph.draw`)."""
        from .draw import to_dot

        return to_dot(self)

    def to_mermaid(self) -> str:
        """Mermaid flowchart text (see :mod:`maskgraph.draw`)."""
        from .draw import to_mermaid

        return to_mermaid(self)

    def tabular(self) -> str:
        """A table of the nodes in execution order, like torch.fx's ``print_tabular``."""
        from .display import printable
        from .registry import get_op

        rows = [("node", "op", "family", "inputs", "params", "out")]
        for name in self.topo_order():
            node = self.nodes[name]
            spec = get_op(node.op, node=name)
            ins = ", ".join(
                f"{p}={'[' + ', '.join(s) + ']' if isinstance(s, list) else s}"
                for p, s in node.inputs.items()
            )
            ps = printable(", ".join(f"{k}={v}" for k, v in node.params.items()), limit=None)
            out = spec.output.value + (" *" if name == self.output else "")
            rows.append((name, node.op, spec.family, ins or "-", ps or "-", out))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        lines = []
        for i, row in enumerate(rows):
            lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        if self.params:
            lines.append("")
            lines.append(
                "params: " + printable(", ".join(f"{k}={v}" for k, v in self.params.items()), limit=None)
            )
        lines.append("(* = graph output)")
        return "\n".join(lines)

    def print_tabular(self) -> None:
        """Print :meth:`tabular`."""
        print(self.tabular())
