"""Graph validation: operators, parameters, wiring, port types, cycles and the output."""

from __future__ import annotations

import difflib
import warnings
from typing import TYPE_CHECKING

import networkx as nx

from .display import printable, shown, shown_list
from .errors import (
    CycleError,
    GraphError,
    MaskgraphWarning,
    OutputError,
    ParameterError,
    WiringError,
)
from .registry import check_params, get_op
from .types import GRAPH_INPUTS, PARAM_REF, PortType

if TYPE_CHECKING:  # annotations only: ir's Graph.validate calls this module
    from .ir import Graph


def source_type(graph: Graph, src: str) -> PortType:
    """The type of the value a source (graph input or node) produces."""
    if src in GRAPH_INPUTS:
        return GRAPH_INPUTS[src]
    return get_op(graph.nodes[src].op, node=src).output


def wired_inputs(graph: Graph, name: str) -> dict[str, object]:
    """The node's inputs with unwired graph-input ports filled in (queries, keys, ...); a list
    port given one source (``masks: window``) reads as a one-item list (``masks: [window]``)."""
    node = graph.nodes[name]
    spec = get_op(node.op, node=name)
    out: dict[str, object] = {}
    for port in spec.inputs:
        if port.name in node.inputs:
            src = node.inputs[port.name]
            out[port.name] = [src] if port.variadic and isinstance(src, str) else src
        elif port.type in GRAPH_INPUTS.values() and not port.optional:
            out[port.name] = next(k for k, t in GRAPH_INPUTS.items() if t == port.type)
    return out


def validate(graph: Graph, *, origins: dict[str, tuple[str, int | None]] | None = None) -> list[str]:
    """Check ``graph``; raise a GraphError subclass on the first problem.

    ``origins`` maps a graph parameter whose value was overridden to (where the value comes
    from, its line or None), which a bad value's message names instead of the ``params:`` line.
    Returns the list of warnings (also issued with :class:`MaskgraphWarning`).
    """
    lines = graph.lines
    for name, node in graph.nodes.items():
        line = lines.get((name,))
        try:
            spec = get_op(node.op, node=name)
        except GraphError as exc:
            exc.line = lines.get((name, "op"), line)
            raise type(exc)(exc.reason, node=name, line=exc.line) from None
        _check_node_params(graph, name, spec, origins or {})
        _check_node_inputs(graph, name, spec)
        _check_node_rule(graph, name, spec)

    g = graph.nx()
    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        names = [u for u, _ in cycle] + [cycle[0][0]]
        raise CycleError(
            f"the graph has a cycle: {shown_list(names, sep=' -> ')}; a graph must be acyclic",
            node=cycle[0][0],
            line=lines.get((cycle[0][0],)),
        )

    out = graph.output
    if out not in graph.nodes:
        hint = difflib.get_close_matches(out[:100], list(graph.nodes), n=1)
        raise OutputError(
            f"output {shown(out)} is not a node{'; did you mean ' + repr(hint[0]) + '?' if hint else ''} "
            f"(nodes: {shown_list(graph.nodes)})",
            line=lines.get(("$output",)),
        )
    out_type = source_type(graph, out)
    if out_type != PortType.MASK:
        raise OutputError(
            f"output node '{out}' gives {out_type.value}, but the graph output must be a Mask",
            node=out,
            line=lines.get(("$output",)),
        )

    found: list[str] = []
    feeding = nx.ancestors(g, out) | {out}
    for name in graph.nodes:
        if name not in feeding:
            msg = f"node '{name}' feeds nothing that reaches the output '{out}'"
            found.append(msg)
            warnings.warn(msg, MaskgraphWarning, stacklevel=3)
    unused = [p for p in graph.params if not _param_used(graph, p)]
    for p in unused:
        msg = f"graph parameter '{p}' is not used by any node"
        found.append(msg)
        warnings.warn(msg, MaskgraphWarning, stacklevel=3)
    return found


def _param_used(graph: Graph, pname: str) -> bool:
    ref = PARAM_REF + pname
    return any(ref in node.params.values() for node in graph.nodes.values())


def _check_node_params(graph: Graph, name: str, spec, origins: dict[str, tuple[str, int | None]]) -> None:
    node = graph.nodes[name]
    resolved = {}
    for key, value in node.params.items():
        if isinstance(value, str) and value.startswith(PARAM_REF):
            ref = value[1:]
            if ref not in graph.params:
                close = difflib.get_close_matches(ref[:100], list(graph.params), n=1)
                hint = f"; did you mean '${close[0]}'?" if close else ""
                raise ParameterError(
                    f"refers to graph parameter '{printable(value)}', which the params: block does not "
                    f"define{hint} (defined: {shown_list(graph.params) or 'none'})",
                    node=name,
                    param=key,
                    line=graph.lines.get((name, "params", key)),
                )
            value = graph.params[ref]
        resolved[key] = value
    try:
        check_params(spec, resolved, node=name)
    except ParameterError as exc:
        line = graph.lines.get((name, "params", exc.param)) or graph.lines.get((name,))
        via = node.params.get(exc.param)
        reason = exc.reason
        if isinstance(via, str) and via.startswith(PARAM_REF) and spec.param(exc.param) is not None:
            reason += f" (value comes from graph parameter '{via}'"
            if via[1:] in origins:
                what, line = origins[via[1:]]
                reason += f", set by {what})"
            else:
                reason += ")"
                line = graph.lines.get(("$params", via[1:]), line)
        raise ParameterError(reason, node=name, param=exc.param, line=line) from None


def _check_node_rule(graph: Graph, name: str, spec) -> None:
    """Run the operator's own wiring rule (``validate``), locating what it raises."""
    rule = spec.validate
    if rule is None:
        return
    try:
        rule(graph.nodes[name], wired_inputs(graph, name))
    except (WiringError, ParameterError) as exc:
        line = graph.lines.get((name,))
        if exc.port:
            line = graph.lines.get((name, "inputs", exc.port), line)
        elif exc.param:
            line = graph.lines.get((name, "params", exc.param), line)
        raise type(exc)(exc.reason, node=name, param=exc.param, port=exc.port, line=line) from None


def _check_node_inputs(graph: Graph, name: str, spec) -> None:
    node = graph.nodes[name]
    line = graph.lines.get((name,))
    for port_name, src in node.inputs.items():
        pline = graph.lines.get((name, "inputs", port_name), line)
        port = spec.port(port_name)
        if port is None:
            ports = [p.name for p in spec.inputs]
            close = difflib.get_close_matches(port_name[:100], ports, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise WiringError(
                f"operator '{spec.name}' has no input port {shown(port_name)}{hint} "
                f"(ports: {', '.join(ports) or 'none'})",
                node=name,
                port=port_name,
                line=pline,
            )
        srcs = src if isinstance(src, list) else [src]
        if isinstance(src, list) and not port.variadic:
            raise WiringError(
                f"port takes one source, got a list of {len(src)}", node=name, port=port_name, line=pline
            )
        if port.variadic and not srcs:
            raise WiringError(
                "variadic port needs at least one source", node=name, port=port_name, line=pline
            )
        for s in srcs:
            if s == name:
                raise CycleError(
                    f"the graph has a cycle: {name} -> {name} (a node reads its own output)",
                    node=name,
                    port=port_name,
                    line=pline,
                )
            if s not in graph.nodes and s not in GRAPH_INPUTS:
                options = list(graph.nodes) + list(GRAPH_INPUTS)
                close = difflib.get_close_matches(s[:100], options, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise WiringError(
                    f"unknown input node {shown(s)}{hint} (nodes: {shown_list(graph.nodes)}; graph inputs: "
                    f"{', '.join(GRAPH_INPUTS)})",
                    node=name,
                    port=port_name,
                    line=pline,
                )
            if s in graph.nodes:
                try:
                    get_op(graph.nodes[s].op, node=s)
                except GraphError:
                    continue  # reported when that node is checked
            got = source_type(graph, s)
            if got != port.type:
                raise WiringError(
                    f"type mismatch: port expects {port.type.value} but '{s}' gives {got.value}",
                    node=name,
                    port=port_name,
                    line=pline,
                )
    for port in spec.inputs:
        if port.name in node.inputs or port.optional:
            continue
        if port.type in GRAPH_INPUTS.values():
            continue  # wired to the graph input of that type
        raise WiringError(
            f"missing input: operator '{spec.name}' needs port '{port.name}' ({port.type.value})",
            node=name,
            port=port.name,
            line=line,
        )
