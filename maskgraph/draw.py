"""Drawing graphs: DOT (Graphviz), Mermaid and a terminal rendering.

Nodes show the operator and its parameters, edges carry the port type, node colours follow
the operator family; graph inputs and the attention output are drawn distinctly.
"""

from __future__ import annotations

from .ir import Graph
from .registry import get_op
from .types import GRAPH_INPUTS
from .validate import source_type, wired_inputs

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


def _label(graph: Graph, name: str) -> tuple[str, list[str]]:
    node = graph.nodes[name]
    params = []
    for key, value in node.params.items():
        shown = graph.resolve(value)
        params.append(f"{key}={shown}" + (f" ({value})" if shown is not value else ""))
    return f"{name}: {node.op}", params


def _edges(graph: Graph):
    used_inputs = set()
    for name in graph.topo_order():
        for port, src in wired_inputs(graph, name).items():
            for s in src if isinstance(src, list) else [src]:
                if s in GRAPH_INPUTS:
                    used_inputs.add(s)
                yield s, name, port, source_type(graph, s).value
    return used_inputs


def _used_inputs(graph: Graph) -> list[str]:
    used = {s for s, *_ in _edges(graph) if s in GRAPH_INPUTS}
    return [n for n in GRAPH_INPUTS if n in used]


def to_dot(graph: Graph) -> str:
    """Graphviz DOT text."""
    q = '"'
    out = [
        f"digraph {q}{graph.name}{q} {{",
        '  rankdir=TB; nodesep=0.35; ranksep=0.45;',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9, color="#555555"];',
        f'  labelloc=t; label="{graph.name}"; fontname="Helvetica-Bold"; fontsize=14;',
    ]
    for name in _used_inputs(graph):
        out.append(
            f'  "{name}" [shape=ellipse, style=filled, fillcolor="{INPUT_COLOUR}", label="{name}\\n({GRAPH_INPUTS[name].value})"];'
        )
    for name in graph.topo_order():
        spec = get_op(graph.nodes[name].op, node=name)
        title, params = _label(graph, name)
        label = "\\n".join([title] + params)
        colour = FAMILY_COLOURS[spec.family]
        out.append(f'  "{name}" [label="{label}", fillcolor="{colour}", tooltip="{spec.family}"];')
    out.append(
        f'  "__attention__" [shape=doubleoctagon, style=filled, fillcolor="{OUTPUT_COLOUR}", '
        'fontcolor="white", label="attention\\n(output)"];'
    )
    for s, d, port, typ in _edges(graph):
        out.append(f'  "{s}" -> "{d}" [label=" {port}: {typ}"];')
    out.append(f'  "{graph.output}" -> "__attention__" [label=" Mask", penwidth=2];')
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
        label = "<br/>".join([title] + params)
        out.append(f'  {name}["{label}"]:::{spec.family}')
    out.append('  attention{{"attention (output)"}}:::output')
    for s, d, port, typ in _edges(graph):
        src = f"in_{s}" if s in GRAPH_INPUTS else s
        out.append(f'  {src} -- "{port}: {typ}" --> {d}')
    out.append(f'  {graph.output} == "Mask" ==> attention')
    for fam, colour in FAMILY_COLOURS.items():
        out.append(f"  classDef {fam} fill:{colour},stroke:#555")
    out.append("  classDef input fill:#fff,stroke:#555")
    out.append("  classDef output fill:#333,color:#fff")
    return "\n".join(out) + "\n"


def to_ascii(graph: Graph) -> str:
    """A terminal rendering: one line per node in execution order with its sources."""
    lines = [f"graph {graph.name}" + (f" — {graph.doc}" if graph.doc else "")]
    for name in graph.topo_order():
        spec = get_op(graph.nodes[name].op, node=name)
        title, params = _label(graph, name)
        srcs = [
            f"{port}<-{'+'.join(s) if isinstance(s, list) else s}"
            for port, s in wired_inputs(graph, name).items()
        ]
        p = f" [{', '.join(params)}]" if params else ""
        lines.append(f"  {title:<28} {spec.family:<10} {spec.output.value:<7} {' '.join(srcs)}{p}")
    lines.append(f"  ==> attention over '{graph.output}'")
    return "\n".join(lines)
