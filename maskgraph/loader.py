"""Reading graphs from YAML (path, text) or dicts, with line numbers for every error.

YAML is read with PyYAML's safe loader only: any language-specific tag (``!!python/...``) or
custom tag is an error that names its line.
"""

from __future__ import annotations

import copy
import difflib
import keyword
import os
from pathlib import Path
from typing import Any

import yaml

from .errors import GraphError, OverrideError, ParameterError, YAMLSyntaxError
from .ir import Graph, LayerRules, Node
from .types import GRAPH_INPUTS

TOP_KEYS = ("graph", "doc", "params", "nodes", "output", "layers")
NODE_KEYS = ("name", "op", "inputs", "params")
RESERVED_NAMES = set(GRAPH_INPUTS) | {"env", "prep", "prepared", "scaling", "sinks", "q_pos"}
_STD_TAGS = {
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}
_MAX_DEPTH = 32
#: Most YAML values a graph file may expand to (aliases included): stops "billion laughs" files.
_MAX_VALUES = 100_000


# ----- YAML with line numbers -------------------------------------------------------------------
def _to_python(
    node: yaml.Node,
    loader: yaml.SafeLoader,
    path: tuple,
    lines: dict,
    depth: int = 0,
    count: list | None = None,
):
    line = node.start_mark.line + 1
    lines.setdefault(path, line)
    count = [0] if count is None else count
    count[0] += 1
    if count[0] > _MAX_VALUES:
        raise YAMLSyntaxError(
            f"the file is too large for a graph (more than {_MAX_VALUES} YAML values; nested aliases?)",
            line=line,
        )
    if depth > _MAX_DEPTH:
        raise YAMLSyntaxError("nesting is too deep for a graph file", line=line)
    if isinstance(node, yaml.MappingNode):
        if node.tag not in _STD_TAGS:
            raise YAMLSyntaxError(f"tag {node.tag!r} is not allowed (plain YAML only)", line=line)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _to_python(key_node, loader, path + ("<key>",), {}, depth + 1, count)
            if isinstance(key, (dict, list)):
                raise YAMLSyntaxError("a mapping key must be a plain value", line=line)
            if key in out:
                raise YAMLSyntaxError(f"duplicate key {key!r}", line=key_node.start_mark.line + 1)
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _to_python(value_node, loader, path + (key,), lines, depth + 1, count)
        return out
    if isinstance(node, yaml.SequenceNode):
        if node.tag not in _STD_TAGS:
            raise YAMLSyntaxError(f"tag {node.tag!r} is not allowed (plain YAML only)", line=line)
        return [
            _to_python(item, loader, path + (i,), lines, depth + 1, count)
            for i, item in enumerate(node.value)
        ]
    if node.tag.startswith("tag:yaml.org,2002:python") or not node.tag.startswith("tag:yaml.org,2002:"):
        raise YAMLSyntaxError(f"tag {node.tag!r} is not allowed (plain YAML only)", line=line)
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(f"cannot read value: {exc}", line=line) from None


def parse_yaml(text: str) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML ``text`` safely; return (data, {path: line})."""
    if "\x00" in text:
        raise YAMLSyntaxError("the file holds binary data, not YAML text")
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc)
        raise YAMLSyntaxError(f"invalid YAML: {problem}", line=line) from None
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    if root is None:
        raise YAMLSyntaxError("the graph is empty; expected a mapping with 'nodes' and 'output'")
    lines: dict[tuple, int] = {}
    loader = yaml.SafeLoader("")
    try:
        data = _to_python(root, loader, (), lines)
    except RecursionError:
        raise YAMLSyntaxError("nesting is too deep for a graph file") from None
    return data, lines


# ----- building the Graph ----------------------------------------------------------------------
def _suggest(name: Any, options) -> str:
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def build_graph(data: Any, lines: dict[tuple, int], *, default_name: str = "graph") -> Graph:
    """Turn parsed YAML data into a :class:`Graph` (structure only; see ``validate``)."""
    if not isinstance(data, dict):
        raise YAMLSyntaxError(
            f"a graph must be a mapping with keys {', '.join(TOP_KEYS)}; got {type(data).__name__}",
            line=lines.get(()),
        )
    for key in data:
        if key not in TOP_KEYS:
            raise GraphError(
                f"unknown top-level key {key!r}{_suggest(key, TOP_KEYS)} (valid: {', '.join(TOP_KEYS)})",
                line=lines.get((key,)),
            )
    name = data.get("graph", default_name)
    if not isinstance(name, str) or not name:
        raise GraphError("'graph' (the graph's name) must be a non-empty string", line=lines.get(("graph",)))
    doc = data.get("doc", "") or ""
    if not isinstance(doc, str):
        raise GraphError("'doc' must be a string", line=lines.get(("doc",)))

    params = data.get("params", {}) or {}
    if not isinstance(params, dict):
        raise GraphError("'params' must be a mapping of name: value", line=lines.get(("params",)))
    for key, value in params.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ParameterError(
                "graph parameter names must be identifiers", param=str(key), line=lines.get(("params", key))
            )
        if not _is_scalar(value):
            raise ParameterError(
                f"graph parameter values must be plain numbers, strings, booleans or null (got {type(value).__name__})",
                param=key,
                line=lines.get(("params", key)),
            )

    raw_nodes = data.get("nodes")
    if raw_nodes is None:
        raise GraphError("the graph has no 'nodes'", line=lines.get(()))
    items: list[tuple[dict, tuple]] = []
    if isinstance(raw_nodes, dict):
        for key, spec in raw_nodes.items():
            if not isinstance(spec, dict):
                raise GraphError(
                    "each node must be a mapping with 'op' (and 'inputs', 'params')",
                    node=str(key),
                    line=lines.get(("nodes", key)),
                )
            if "name" in spec and spec["name"] != key:
                raise GraphError(
                    "node 'name' differs from its key", node=str(key), line=lines.get(("nodes", key))
                )
            items.append(({"name": key, **spec}, ("nodes", key)))
    elif isinstance(raw_nodes, list):
        for i, spec in enumerate(raw_nodes):
            if not isinstance(spec, dict):
                raise GraphError(
                    f"node #{i + 1} must be a mapping with 'name' and 'op'", line=lines.get(("nodes", i))
                )
            items.append((spec, ("nodes", i)))
    else:
        raise GraphError(
            "'nodes' must be a list of nodes (or a mapping name: node)", line=lines.get(("nodes",))
        )
    if not items:
        raise GraphError("the graph has no nodes", line=lines.get(("nodes",)))

    nodes: dict[str, Node] = {}
    node_lines: dict[tuple, int] = {}
    for spec, path in items:
        nline = lines.get(path)
        nname = spec.get("name")
        if not isinstance(nname, str) or not nname:
            raise GraphError("node has no 'name' (a string)", line=nline)
        if not nname.isidentifier() or keyword.iskeyword(nname) or nname.startswith("_"):
            raise GraphError(
                "node names must be identifiers (letters, digits, underscores; not starting with a digit or '_')",
                node=nname,
                line=nline,
            )
        if nname in RESERVED_NAMES:
            raise GraphError(
                f"node name is reserved (reserved: {', '.join(sorted(RESERVED_NAMES))})",
                node=nname,
                line=nline,
            )
        if nname in nodes:
            raise GraphError(
                f"duplicate node name (first defined on line {node_lines.get((nname,))})",
                node=nname,
                line=nline,
            )
        for key in spec:
            if key not in NODE_KEYS:
                raise GraphError(
                    f"unknown node key {key!r}{_suggest(key, NODE_KEYS)} (valid: {', '.join(NODE_KEYS)})",
                    node=nname,
                    line=lines.get(path + (key,), nline),
                )
        op = spec.get("op")
        if not isinstance(op, str):
            raise GraphError("node has no 'op' (an operator name)", node=nname, line=nline)
        inputs = spec.get("inputs", {}) or {}
        if not isinstance(inputs, dict):
            raise GraphError(
                "'inputs' must be a mapping port: source",
                node=nname,
                line=lines.get(path + ("inputs",), nline),
            )
        for port, src in inputs.items():
            ok = isinstance(src, str) or (isinstance(src, list) and all(isinstance(s, str) for s in src))
            if not isinstance(port, str) or not ok:
                raise GraphError(
                    "an input must name a source node (or a list of them for a variadic port)",
                    node=nname,
                    port=str(port),
                    line=lines.get(path + ("inputs", port), nline),
                )
        nparams = spec.get("params", {}) or {}
        if not isinstance(nparams, dict):
            raise GraphError(
                "'params' must be a mapping name: value",
                node=nname,
                line=lines.get(path + ("params",), nline),
            )
        for key, value in nparams.items():
            if not isinstance(key, str) or not _is_scalar(value):
                raise ParameterError(
                    "parameter values must be plain numbers, strings, booleans or null",
                    node=nname,
                    param=str(key),
                    line=lines.get(path + ("params", key), nline),
                )
        nodes[nname] = Node(name=nname, op=op, inputs=dict(inputs), params=dict(nparams))
        node_lines[(nname,)] = nline
        for sub in ("op", "inputs", "params"):
            if path + (sub,) in lines:
                node_lines[(nname, sub)] = lines[path + (sub,)]
        for port in inputs:
            node_lines[(nname, "inputs", port)] = lines.get(path + ("inputs", port), nline)
        for key in nparams:
            node_lines[(nname, "params", key)] = lines.get(path + ("params", key), nline)

    output = data.get("output")
    if output is None:
        raise GraphError(
            "the graph has no 'output' (the node whose Mask feeds the attention)", line=lines.get(())
        )
    if not isinstance(output, str):
        raise GraphError("'output' must name a node", line=lines.get(("output",)))

    layers = _build_layers(data.get("layers"), lines, params)

    for key in params:
        node_lines[("$params", key)] = lines.get(("params", key))
    node_lines[("$output",)] = lines.get(("output",))
    for idx, extra in layers.overrides.items():
        raw_key = next(
            (k for k in (data.get("layers") or {}).get("overrides", {}) if str(k) == str(idx)), idx
        )
        for pname in extra:
            node_lines[("$layers", idx, pname)] = lines.get(("layers", "overrides", raw_key, pname))
    return Graph(
        name=name,
        nodes=nodes,
        output=output,
        params=dict(params),
        doc=doc,
        layers=layers,
        lines=node_lines,
    )


def _build_layers(raw: Any, lines: dict, params: dict) -> LayerRules:
    if raw is None:
        return LayerRules()
    if not isinstance(raw, dict):
        raise GraphError(
            "'layers' must be a mapping with 'dense' and/or 'overrides'", line=lines.get(("layers",))
        )
    for key in raw:
        if key not in ("dense", "overrides"):
            raise GraphError(
                f"unknown key {key!r} in 'layers' (valid: dense, overrides)", line=lines.get(("layers", key))
            )
    dense = raw.get("dense", []) or []
    if not isinstance(dense, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in dense
    ):
        raise GraphError(
            "'layers.dense' must be a list of layer indices (ints >= 0)", line=lines.get(("layers", "dense"))
        )
    overrides_raw = raw.get("overrides", {}) or {}
    if not isinstance(overrides_raw, dict):
        raise GraphError(
            "'layers.overrides' must map a layer index to parameter overrides",
            line=lines.get(("layers", "overrides")),
        )
    overrides: dict[int, dict[str, Any]] = {}
    for key, value in overrides_raw.items():
        line = lines.get(("layers", "overrides", key))
        try:
            idx = int(key)
        except (TypeError, ValueError):
            raise GraphError(f"layer index {key!r} is not an integer", line=line) from None
        if isinstance(key, bool) or idx < 0:
            raise GraphError(f"layer index {key!r} must be an int >= 0", line=line)
        if not isinstance(value, dict):
            raise GraphError(f"overrides for layer {idx} must be a mapping name: value", line=line)
        for name in value:
            if name not in params:
                raise OverrideError(
                    f"layer {idx} overrides unknown graph parameter {name!r}{_suggest(name, params)} "
                    f"(defined: {', '.join(params) or 'none'})",
                    param=str(name),
                    line=lines.get(("layers", "overrides", key, name), line),
                )
        overrides[idx] = dict(value)
    return LayerRules(dense=list(dense), overrides=overrides)


def apply_overrides(graph: Graph, overrides: dict[str, Any]) -> Graph:
    """A validated copy of ``graph`` with its ``params:`` block updated from ``overrides``."""
    from .validate import validate

    if not isinstance(overrides, dict):
        raise OverrideError(f"overrides must be a dict name -> value, got {type(overrides).__name__}")
    unknown = [k for k in overrides if k not in graph.params]
    if unknown:
        k = unknown[0]
        raise OverrideError(
            f"override of unknown graph parameter {k!r}{_suggest(k, graph.params)} "
            f"(graph '{graph.name}' defines: {', '.join(graph.params) or 'none'})",
            param=str(k),
            file=graph.source,
        )
    new = copy.copy(graph)
    new.params = {**graph.params, **overrides}
    new.nodes = {k: copy.deepcopy(v) for k, v in graph.nodes.items()}
    new.lines = dict(graph.lines)
    try:
        validate(new)
    except GraphError as exc:
        raise exc.located(graph.source) from None
    return new


def load_graph(source: str | os.PathLike | dict | Graph, overrides: dict[str, Any] | None = None) -> Graph:
    """Load and validate a graph from a YAML path, YAML text, a dict (or a Graph, copied).

    ``overrides`` updates the graph's ``params:`` block; a name it does not define is an error.
    A bare name such as ``"quest"`` loads ``graphs/quest.yaml`` shipped with maskgraph.
    Raises a :class:`~maskgraph.errors.GraphError` subclass naming the file, line, node and
    parameter of the first problem.
    """
    from .validate import validate

    file: str | None = None
    if isinstance(source, Graph):
        return apply_overrides(source, overrides or {})
    if isinstance(source, dict):
        data, lines, default_name = copy.deepcopy(source), {}, "graph"
    else:
        text, file = _read_source(source)
        default_name = Path(file).stem if file else "graph"
        try:
            data, lines = parse_yaml(text)
        except GraphError as exc:
            raise exc.located(file) from None
    try:
        graph = build_graph(data, lines, default_name=default_name)
        graph.source = file
        validate(graph)
        _check_layer_overrides(graph)
    except GraphError as exc:
        raise exc.located(file) from None
    if overrides:
        graph = apply_overrides(graph, overrides)
    return graph


def _check_layer_overrides(graph: Graph) -> None:
    """Validate the graph of every layer that ``layers.overrides`` changes."""
    import warnings

    for idx, extra in graph.layers.overrides.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                apply_overrides(graph, extra)
        except GraphError as exc:
            pname = next((p for p in extra if exc.param and f"'${p}'" in exc.reason), None)
            line = graph.lines.get(("$layers", idx, pname)) if pname else None
            raise type(exc)(
                f"with the overrides of layer {idx}: {exc.reason}",
                node=exc.node,
                param=exc.param,
                port=exc.port,
                line=line or exc.line,
            ) from None


def shipped_graphs_dir() -> Path:
    """The folder of YAML graphs shipped with maskgraph."""
    here = Path(__file__).resolve().parent
    for cand in (here / "graphs", here.parent / "graphs"):
        if cand.is_dir():
            return cand
    return here.parent / "graphs"


def shipped_graphs() -> dict[str, Path]:
    """Shipped graph name -> path."""
    return {p.stem: p for p in sorted(shipped_graphs_dir().glob("*.yaml"))}


def _read_source(source: str | os.PathLike) -> tuple[str, str | None]:
    if isinstance(source, os.PathLike):
        path = Path(source)
    elif (
        isinstance(source, str)
        and "\n" not in source
        and (source.endswith((".yaml", ".yml")) or os.path.sep in source)
    ):
        path = Path(source)
    elif isinstance(source, str) and "\n" not in source and source in shipped_graphs():
        path = shipped_graphs()[source]
    elif isinstance(source, str) and "\n" not in source and not any(c in source for c in ":{}[]"):
        known = list(shipped_graphs())
        raise GraphError(
            f"no such graph file or shipped graph {source!r}{_suggest(source, known)} (shipped: {', '.join(known)})"
        )
    elif isinstance(source, str):
        return source, None
    else:
        raise GraphError(
            f"cannot load a graph from {type(source).__name__}; give a path, YAML text or a dict"
        )
    if not path.exists():
        known = ", ".join(shipped_graphs())
        raise GraphError(f"no such file (shipped graphs: {known})", file=str(path))
    if path.is_dir():
        raise GraphError("is a folder, not a graph file (give the .yaml files inside it)", file=str(path))
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GraphError(f"cannot read the file: {exc.strerror or exc}", file=str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise YAMLSyntaxError("the file is not UTF-8 text (binary data?)", file=str(path)) from None
    return text, str(path)
