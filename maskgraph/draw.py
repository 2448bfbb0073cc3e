"""Drawing graphs: DOT (Graphviz), Mermaid and a terminal rendering.

Nodes show the operator and its parameters, edges carry the port type, node colours follow
the operator family; graph inputs and the attention output are drawn distinctly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .display import printable
from .registry import get_op
from .types import GRAPH_INPUTS
from .validate import source_type, wired_inputs

if TYPE_CHECKING:  # annotations only: ir's Graph.to_dot and to_mermaid call this module
    from .ir import Graph

#: Fill colours by family (colour-blind-safe Okabe-Ito tints).
FAMILY_COLOURS = {
    "fixed": "#cfe8f7",
    "estimator": "#fde4b8",
    "selector": "#cdeedd",
    "sampler": "#f6d0e3",
    "combinator": "#e6e6e6",
    "utility": "#fff7c2",
}
INPUT_COLOUR = "#ffffff"
OUTPUT_COLOUR = "#333333"


def _show(value: object) -> str:
    """A parameter value as YAML spells it (null, true, false)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _label(graph: Graph, name: str) -> tuple[str, list[str]]:
    node = graph.nodes[name]
    params = []
    for key, value in node.params.items():
        shown = graph.resolve(value)
        params.append(f"{key}={_show(shown)}" + (f" ({value})" if shown is not value else ""))
    return f"{name}: {node.op}", params


def _edges(graph: Graph):
    """(source, destination, port, port type) for every wire, graph inputs included."""
    for name in graph.topo_order():
        for port, src in wired_inputs(graph, name).items():
            for s in src if isinstance(src, list) else [src]:
                yield s, name, port, source_type(graph, s).value


def _edge_text(port: str, typ: str) -> str:
    """``port: Type``, or just ``Type`` where the port is named after its type (keys: Keys)."""
    return typ if port.replace("_", "").lower() == typ.lower() else f"{port}: {typ}"


def _used_inputs(graph: Graph) -> list[str]:
    used = {s for s, *_ in _edges(graph) if s in GRAPH_INPUTS}
    return [n for n in GRAPH_INPUTS if n in used]


def _html(text: object) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _dot_string(text: object) -> str:
    """Text safe inside a double-quoted DOT string."""
    return str(text).replace("\\", "\\\\").replace('"', '\\"')


def _mermaid_text(text: object) -> str:
    """Text safe inside a quoted Mermaid label."""
    return str(text).replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def _dot_node_label(graph: Graph, name: str) -> str:
    node = graph.nodes[name]
    rows = [f'<B>{_html(name)}</B><FONT COLOR="#444444">  {_html(node.op)}</FONT>']
    for key, value in node.params.items():
        shown = graph.resolve(value)
        ref = f' <FONT COLOR="#777777">{_html(value)}</FONT>' if shown is not value else ""
        rows.append(f'<FONT POINT-SIZE="10">{_html(key)}={_html(_show(shown))}{ref}</FONT>')
    return "<" + "<BR/>".join(rows) + ">"


def _families(graph: Graph) -> list[str]:
    used = {get_op(n.op, node=k).family for k, n in graph.nodes.items()}
    return [f for f in FAMILY_COLOURS if f in used]


def to_dot(graph: Graph) -> str:
    """Graphviz DOT text: coloured nodes by family, typed edges, a legend of the families."""
    q = '"'
    out = [
        f"digraph {q}{_dot_string(graph.name)}{q} {{",
        "  rankdir=TB; nodesep=0.3; ranksep=0.5;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, color="#555555"];',
        '  edge [fontname="Helvetica", fontsize=9, color="#555555", fontcolor="#333333"];',
        f'  labelloc=t; label=<<B>{_html(graph.name)}</B>>; fontname="Helvetica"; fontsize=15;',
    ]
    for name in _used_inputs(graph):
        out.append(
            f'  "{name}" [shape=ellipse, style="filled,dashed", fillcolor="{INPUT_COLOUR}", '
            f'fontcolor="#555555", label="{name}"];'
        )
    for name in graph.topo_order():
        spec = get_op(graph.nodes[name].op, node=name)
        penwidth = ", penwidth=2" if name == graph.output else ""
        out.append(
            f'  "{name}" [label={_dot_node_label(graph, name)}, fillcolor="{FAMILY_COLOURS[spec.family]}", '
            f'tooltip="{spec.family}: {_html(spec.doc[:200])}"{penwidth}];'
        )
    out.append(
        f'  "__attention__" [shape=doubleoctagon, style=filled, fillcolor="{OUTPUT_COLOUR}", '
        'fontcolor="white", label="attention"];'
    )
    for s, d, port, typ in _edges(graph):
        style = ', style=dashed, color="#999999", fontcolor="#777777"' if s in GRAPH_INPUTS else ""
        out.append(f'  "{s}" -> "{d}" [label=" {_edge_text(port, typ)}"{style}];')
    out.append(f'  "{graph.output}" -> "__attention__" [label=" Mask", penwidth=2];')
    fams = _families(graph)
    if fams:
        cells = "".join(f'<TD BGCOLOR="{FAMILY_COLOURS[f]}">{f}</TD>' for f in fams)
        out.append(
            '  "__legend__" [shape=plaintext, style="", fontsize=9, '
            f'label=<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="2" CELLPADDING="3"><TR>{cells}</TR></TABLE>>];'
        )
        out.append('  { rank=same; "__attention__"; "__legend__"; }')
    layers = _layer_lines(graph)
    if layers:
        text = '<BR ALIGN="LEFT"/>'.join(_html(line) for line in layers) + '<BR ALIGN="LEFT"/>'
        out.append(
            f'  "__layers__" [shape=note, style=filled, fillcolor="#ffffff", fontsize=10, label=<{text}>];'
        )
        out.append('  { rank=same; "__attention__"; "__layers__"; }')
    out.append("}")
    return "\n".join(out) + "\n"


def to_mermaid(graph: Graph) -> str:
    """Mermaid flowchart text."""
    out = ["flowchart TB"]
    for name in _used_inputs(graph):
        out.append(f'  in_{name}(["{name}<br/>{GRAPH_INPUTS[name].value}"]):::input')
    for name in graph.topo_order():
        spec = get_op(graph.nodes[name].op, node=name)
        title, params = _label(graph, name)
        label = "<br/>".join(_mermaid_text(x) for x in [title] + params)
        out.append(f'  {name}["{label}"]:::{spec.family}')
    out.append('  attention{{"attention (output)"}}:::output')
    for s, d, port, typ in _edges(graph):
        src = f"in_{s}" if s in GRAPH_INPUTS else s
        text = _edge_text(port, typ)
        if s in GRAPH_INPUTS:
            out.append(f'  {src} -. "{text}" .-> {d}')
        else:
            out.append(f'  {src} -- "{text}" --> {d}')
    out.append(f'  {graph.output} == "Mask" ==> attention')
    layers = _layer_lines(graph)
    if layers:
        out.append(f'  layers["{"<br/>".join(_mermaid_text(line) for line in layers)}"]:::note')
    for fam, colour in FAMILY_COLOURS.items():
        out.append(f"  classDef {fam} fill:{colour},stroke:#555")
    out.append("  classDef input fill:#fff,stroke:#555")
    out.append("  classDef output fill:#333,color:#fff")
    out.append("  classDef note fill:#fff,stroke:#999,stroke-dasharray:3")
    return "\n".join(out) + "\n"


def to_ascii(graph: Graph, width: int = 100) -> str:
    """A terminal rendering: one line per node in execution order with its sources and params.

    A source shown bare is a graph input or a port named after its source (``keys``); others
    read ``port<-source`` (``+`` joins the sources of a list port).
    """
    import textwrap

    lines = [f"graph {printable(graph.name, limit=None)}"]
    if graph.doc:
        doc = textwrap.wrap(graph.doc, width=width, initial_indent="  ", subsequent_indent="  ")
        lines += [printable(line, limit=None) for line in doc]
    lines.append("")
    for name in graph.topo_order():
        spec = get_op(graph.nodes[name].op, node=name)
        title, params = _label(graph, name)
        srcs = []
        for port, s in wired_inputs(graph, name).items():
            joined = "+".join(s) if isinstance(s, list) else s
            srcs.append(joined if port == joined else f"{port}<-{joined}")
        head = f"  {title:<28} {spec.family:<10} {spec.output.value:<7} {' '.join(srcs)}"
        lines.append(head)
        if params:
            lines += textwrap.wrap(
                printable(", ".join(params), limit=None),
                width=width,
                initial_indent=" " * 50 + "[",
                subsequent_indent=" " * 51,
            )
            lines[-1] += "]"
    lines.append(f"  ==> attention over '{graph.output}'")
    lines += ["  " + line for line in _layer_lines(graph)]
    return "\n".join(lines)


def _layer_lines(graph: Graph) -> list[str]:
    """The graph's layer rules as lines of text (none without rules), the same in every drawing:
    ``dense layers (graph not applied): 0, 1`` and ``layer 3 overrides: k=8``."""
    lines = []
    if graph.layers.dense:
        lines.append(f"dense layers (graph not applied): {', '.join(map(str, graph.layers.dense))}")
    for idx, extra in sorted(graph.layers.overrides.items()):
        shown = ", ".join(f"{k}={_show(v)}" for k, v in extra.items())
        lines.append(f"layer {idx} overrides: " + printable(shown, limit=None))
    return lines
