"""Reading graphs from YAML (path, text) or dicts, with line numbers for every error.

YAML is read from PyYAML's event stream with the safe loader's scalars only: any
language-specific tag (``!!python/...``) or custom tag is an error that names its line. Reading
is bounded before and while parsing: :data:`MAX_GRAPH_BYTES` of input, :data:`MAX_DEPTH` levels,
:data:`MAX_VALUES` values (aliases counted at every use); override values take no aliases
(docs/guarantees.md, "Size limits and validation").
"""

from __future__ import annotations

import copy
import keyword
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .display import printable, shown, shown_list
from .errors import GraphError, OverrideError, ParameterError, YAMLSyntaxError
from .ir import Graph, LayerRules, Node
from .overrides import apply_overrides, check_override_value, is_scalar, overridden, suggest, value_kind
from .types import GRAPH_INPUTS

TOP_KEYS = ("graph", "doc", "params", "nodes", "output", "layers")
NODE_KEYS = ("name", "op", "inputs", "params")
RESERVED_NAMES = set(GRAPH_INPUTS) | {"env", "prep", "prepared", "scaling", "sinks", "q_pos"}
#: Largest graph that maskgraph reads, in bytes of UTF-8 (a file, a stream or YAML text): a larger
#: one is refused before any of it is parsed. The shipped graphs are about 1 KiB.
MAX_GRAPH_BYTES = 1 << 20
#: Deepest nesting of mappings and lists in a graph (a graph itself needs four levels).
MAX_DEPTH = 32
#: Most YAML values (scalars, lists, mappings, keys) a graph may hold, an alias counting the
#: values it repeats at every use: stops "billion laughs" files.
MAX_VALUES = 100_000
#: Longest text of one override value (``-p name=VALUE``).
MAX_OVERRIDE_CHARS = 1000

# libyaml's parser where PyYAML has it: the same events as the pure-Python one, many times faster.
_PARSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# ----- YAML with line numbers -------------------------------------------------------------------
@dataclass
class _Open:
    """A mapping or list being read: its value so far, where it sits, what it holds."""

    value: dict | list
    path: tuple
    line: int
    anchor: str | None
    key: Any = None
    has_key: bool = False
    values: int = 1
    height: int = 1


@dataclass
class _Anchored:
    """A finished value with an anchor (``&name``): what an alias (``*name``) repeats."""

    value: Any
    values: int
    height: int


class _Reader:
    """Builds Python data from a stream of YAML events, without recursion, with the line of every
    value, and refuses what a graph cannot hold: tags beyond plain YAML, nesting deeper than
    :data:`MAX_DEPTH`, more than :data:`MAX_VALUES` values, aliases where ``aliases`` is False,
    a second document."""

    def __init__(self, lines: dict[tuple, int], *, aliases: bool, what: str) -> None:
        self.lines = lines
        self.aliases = aliases
        self.what = what
        self.open: list[_Open] = []
        self.anchors: dict[str, _Anchored] = {}
        self.values = 0
        self.documents = 0
        self.root: Any = None
        self.scalars = yaml.SafeLoader("")  # resolves and constructs plain scalars

    def feed(self, event: yaml.Event) -> None:
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise YAMLSyntaxError(
                    f"invalid YAML: {self.what} is one YAML document; found a second", line=line
                )
        elif isinstance(event, yaml.AliasEvent):
            self._alias(event, line)
        elif isinstance(event, yaml.ScalarEvent):
            self._check_anchor(event, line)
            self._count(1, line)
            self._close(self._scalar(event, line), line, event.anchor, values=1, height=0)
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            self._start(event, line)
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            done = self.open.pop()
            self._close(done.value, done.line, done.anchor, values=done.values, height=done.height)

    def _count(self, n: int, line: int | None) -> None:
        self.values += n
        if self.values > MAX_VALUES:
            raise YAMLSyntaxError(
                f"too large for {self.what}: more than {MAX_VALUES} YAML values (aliases counted at "
                "every use)",
                line=line,
            )

    def too_deep(self, line: int | None) -> YAMLSyntaxError:
        return YAMLSyntaxError(
            f"nesting is too deep for {self.what} (at most {MAX_DEPTH} levels of lists and mappings)",
            line=line,
        )

    def _check_anchor(self, event, line: int | None) -> None:
        if event.anchor is not None and not self.aliases:
            raise YAMLSyntaxError(
                f"YAML anchors and aliases (&{printable(event.anchor)}) are not allowed in {self.what}",
                line=line,
            )

    def _child_path(self) -> tuple:
        """The path of the value about to be read."""
        if not self.open:
            return ()
        parent = self.open[-1]
        if isinstance(parent.value, list):
            return parent.path + (len(parent.value),)
        if not parent.has_key:
            return parent.path + ("<key>",)
        return parent.path + (parent.key,)

    def _start(self, event, line: int | None) -> None:
        self._check_anchor(event, line)
        is_map = isinstance(event, yaml.MappingStartEvent)
        default = "tag:yaml.org,2002:map" if is_map else "tag:yaml.org,2002:seq"
        tag = default if event.tag in (None, "!") else event.tag
        if tag != default:
            raise YAMLSyntaxError(f"tag {tag!r} is not allowed (plain YAML only)", line=line)
        if self.open and isinstance(self.open[-1].value, dict) and not self.open[-1].has_key:
            raise YAMLSyntaxError("a mapping key must be a plain value", line=line)
        if len(self.open) >= MAX_DEPTH:
            raise self.too_deep(line)
        self._count(1, line)
        path = self._child_path()
        self.lines.setdefault(path, line)
        self.open.append(_Open({} if is_map else [], path, line, event.anchor))

    def _alias(self, event, line: int | None) -> None:
        if not self.aliases:
            raise YAMLSyntaxError(
                f"YAML anchors and aliases (*{printable(event.anchor)}) are not allowed in {self.what}",
                line=line,
            )
        target = self.anchors.get(event.anchor)
        if target is None:
            raise YAMLSyntaxError(
                f"alias *{printable(event.anchor)} names no anchor finished before it (an anchor may not contain its own alias)",
                line=line,
            )
        if len(self.open) + target.height > MAX_DEPTH:
            raise self.too_deep(line)
        self._count(target.values, line)
        value = copy.deepcopy(target.value)
        self._close(value, line, None, values=target.values, height=target.height)

    def _scalar(self, event: yaml.ScalarEvent, line: int | None) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.scalars.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag.startswith("tag:yaml.org,2002:python") or not tag.startswith("tag:yaml.org,2002:"):
            raise YAMLSyntaxError(f"tag {tag!r} is not allowed (plain YAML only)", line=line)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        try:
            return self.scalars.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise YAMLSyntaxError(f"cannot read value {shown(event.value)}: {exc}", line=line) from None
        except (ValueError, OverflowError) as exc:  # a date like 2024-13-01, an int of 5000 digits
            kind = tag.rpartition(":")[2]
            raise YAMLSyntaxError(
                f"cannot read {shown(event.value)} as a YAML {kind}: {printable(exc)} (quote it to make it text)",
                line=line,
            ) from None

    def _close(self, value: Any, line: int | None, anchor: str | None, *, values: int, height: int) -> None:
        """A value is finished: remember its anchor and put it into its parent."""
        if anchor is not None:
            self.anchors[anchor] = _Anchored(value, values, height)
        if not self.open:
            self.lines.setdefault((), line)
            self.root = value
            return
        parent = self.open[-1]
        parent.values += values
        parent.height = max(parent.height, height + 1)
        if isinstance(parent.value, list):
            self.lines.setdefault(parent.path + (len(parent.value),), line)
            parent.value.append(value)
        elif not parent.has_key:
            if isinstance(value, (dict, list)):
                raise YAMLSyntaxError("a mapping key must be a plain value", line=line)
            try:
                duplicate = value in parent.value
            except TypeError:
                raise YAMLSyntaxError("a mapping key must be a plain value", line=line) from None
            if duplicate:
                raise YAMLSyntaxError(f"duplicate key {shown(value)}", line=line)
            self.lines[parent.path + (value,)] = line
            parent.key, parent.has_key = value, True
        else:
            self.lines.setdefault(parent.path + (parent.key,), line)
            parent.value[parent.key] = value
            parent.key, parent.has_key = None, False


def _parse(text: str, lines: dict[tuple, int], *, aliases: bool, what: str) -> Any:
    """Read YAML ``text`` into plain data (see :class:`_Reader`); ``None`` for an empty text."""
    reader = _Reader(lines, aliases=aliases, what=what)
    parser = _PARSER(text)
    try:
        while parser.check_event():
            reader.feed(parser.get_event())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc)
        if "nesting depth" in problem:  # libyaml's own limit (1000), met while it looks ahead
            raise reader.too_deep(line) from None
        raise YAMLSyntaxError(f"invalid YAML: {printable(problem)}", line=line) from None
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(f"invalid YAML: {printable(exc)}") from None
    finally:
        parser.dispose()
    return reader.root


def parse_yaml(
    text: str, what: str = "a graph", expected: str = "a mapping with 'nodes' and 'output'"
) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML ``text`` safely; return (data, {path: line}).

    ``what`` names the document in messages (``"a graph"``, ``"a sweep file"``) and ``expected``
    says what an empty one should hold. Refuses text over :data:`MAX_GRAPH_BYTES`, nesting
    deeper than :data:`MAX_DEPTH` and more than :data:`MAX_VALUES` values (aliases counted at
    every use) with a :class:`~maskgraph.errors.YAMLSyntaxError`.
    """
    _check_size(text)
    if "\x00" in text:
        raise YAMLSyntaxError("the file holds binary data, not YAML text")
    lines: dict[tuple, int] = {}
    data = _parse(text, lines, aliases=True, what=what)
    if data is None and () not in lines:
        noun = what.split(" ", 1)[-1]
        raise YAMLSyntaxError(f"the {noun} is empty; expected {expected}")
    return data, lines


def parse_override_value(text: str) -> Any:
    """An override value written as YAML text (``-p name=VALUE``) -> a number, string, bool or None.

    Refuses text over :data:`MAX_OVERRIDE_CHARS` characters, anchors and aliases, lists and
    mappings, and values YAML reads as something else (a date) with an
    :class:`~maskgraph.errors.OverrideError`.
    """
    if len(text) > MAX_OVERRIDE_CHARS:
        raise OverrideError(f"the value is longer than {MAX_OVERRIDE_CHARS} characters")
    try:
        value = _parse(text, {}, aliases=False, what="an override value")
    except YAMLSyntaxError as exc:
        raise OverrideError(exc.reason) from None
    if not is_scalar(value):
        raise OverrideError(
            f"YAML reads {shown(text)} as {value_kind(value)}; a graph parameter takes a number, a string, "
            "true/false or null (quote the value to pass it as text)"
        )
    return value


def _check_size(text: str) -> None:
    if len(text) > MAX_GRAPH_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_GRAPH_BYTES:
        raise YAMLSyntaxError(
            f"the graph is larger than {MAX_GRAPH_BYTES} bytes (MAX_GRAPH_BYTES), the most maskgraph reads"
        )


def _check_plain_data(data: Any) -> None:
    """A graph given as a dict: at most :data:`MAX_DEPTH` levels and :data:`MAX_VALUES` values
    (walked without recursion; a container that holds itself is too deep)."""
    todo = [(data, 1)]
    seen = 0
    while todo:
        value, depth = todo.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise GraphError(f"the graph is too large (more than {MAX_VALUES} values)")
        if isinstance(value, dict):
            children = [*value.keys(), *value.values()]
        elif isinstance(value, (list, tuple)):
            children = list(value)
        else:
            continue
        if depth > MAX_DEPTH:
            raise GraphError(
                f"nesting is too deep for a graph (at most {MAX_DEPTH} levels of lists and mappings)"
            )
        todo.extend((child, depth + 1) for child in children)


# ----- building the Graph ----------------------------------------------------------------------
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
                f"unknown top-level key {shown(key)}{suggest(key, TOP_KEYS)} (valid: {', '.join(TOP_KEYS)})",
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
        if not is_scalar(value):
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
                    f"unknown node key {shown(key)}{suggest(key, NODE_KEYS)} (valid: {', '.join(NODE_KEYS)})",
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
            if not isinstance(key, str) or not is_scalar(value):
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
        if key not in ("dense", "overrides", "pyramid"):
            raise GraphError(
                f"unknown key {shown(key)} in 'layers' (valid: dense, overrides, pyramid)",
                line=lines.get(("layers", key)),
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
        except (TypeError, ValueError, OverflowError):
            raise GraphError(f"layer index {shown(key)} is not an integer", line=line) from None
        if isinstance(key, bool) or idx < 0:
            raise GraphError(f"layer index {shown(key)} must be an int >= 0", line=line)
        if not isinstance(value, dict):
            raise GraphError(f"overrides for layer {idx} must be a mapping name: value", line=line)
        for name in value:
            if name not in params:
                raise OverrideError(
                    f"layer {idx} overrides unknown graph parameter {shown(name)}{suggest(name, params)} "
                    f"(defined: {shown_list(params) or 'none'})",
                    param=str(name),
                    line=lines.get(("layers", "overrides", key, name), line),
                )
        overrides[idx] = dict(value)
    pyramid = _build_pyramid(raw.get("pyramid"), lines, params)
    return LayerRules(dense=list(dense), overrides=overrides, pyramid=pyramid)


def _build_pyramid(raw: Any, lines: dict, params: dict) -> dict[str, Any] | None:
    """``layers.pyramid``: ``{param: NAME, beta: β}``, NAME a graph parameter holding a size
    (int >= 1 or float in (0, 1]), β a number >= 1 (default 20)."""
    if raw is None:
        return None
    line = lines.get(("layers", "pyramid"))
    if not isinstance(raw, dict) or set(raw) - {"param", "beta"} or "param" not in raw:
        raise GraphError("'layers.pyramid' must be a mapping {param: NAME, beta: NUMBER >= 1}", line=line)
    name, beta = raw["param"], raw.get("beta", 20)
    if not isinstance(name, str) or name not in params:
        raise OverrideError(
            f"layers.pyramid names unknown graph parameter {shown(name)}{suggest(str(name), params)} "
            f"(defined: {shown_list(params) or 'none'})",
            param=str(name),
            line=lines.get(("layers", "pyramid", "param"), line),
        )
    mean = params[name]
    if isinstance(mean, bool) or not (
        (isinstance(mean, int) and mean >= 1) or (isinstance(mean, float) and 0.0 < mean <= 1.0)
    ):
        raise GraphError(
            f"layers.pyramid: parameter {shown(name)} must hold a size (an int >= 1 or a float in "
            f"(0, 1]), got {shown(mean)}",
            line=lines.get(("layers", "pyramid", "param"), line),
        )
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 1 <= beta <= 2**20:
        raise GraphError(
            f"layers.pyramid: beta must be a number in [1, 1048576] (got {shown(beta)})",
            line=lines.get(("layers", "pyramid", "beta"), line),
        )
    return {"param": name, "beta": beta}


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
        _check_plain_data(source)
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
        origins = {}
        for pname, value in extra.items():
            line = graph.lines.get(("$layers", idx, pname))
            check_override_value(pname, value, line=line)
            origins[pname] = (f"the overrides of layer {idx}", line)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                overridden(graph, extra, origins)
        except GraphError as exc:
            if f"overrides of layer {idx}" in exc.reason:
                raise
            # a rule over several parameters (lsh_l · lsh_k) that only this layer's values break:
            # name the layer and point at its overrides, not at the params: block
            line = graph.lines.get(("$layers", idx, next(iter(extra), None)))
            raise type(exc)(
                f"with the overrides of layer {idx}: {exc.reason}",
                file=exc.file,
                node=exc.node,
                param=exc.param,
                port=exc.port,
                line=line or exc.line,
            ) from None


def shipped_graphs_dir() -> Path:
    """The folder of YAML graphs shipped with maskgraph: ``maskgraph/graphs`` (in a checkout a
    link to the top-level ``graphs/``, which a built wheel carries as files)."""
    here = Path(__file__).resolve().parent
    for cand in (here / "graphs", here.parent / "graphs"):
        if cand.is_dir():
            return cand
    return here.parent / "graphs"


def shipped_graphs() -> dict[str, Path]:
    """Shipped graph name -> path."""
    return {p.stem: p for p in sorted(shipped_graphs_dir().glob("*.yaml"))}


def _read_bounded(path: Path) -> bytes:
    """At most :data:`MAX_GRAPH_BYTES` bytes of ``path`` (a file, a device, a pipe); a longer
    one is refused after reading one byte more, never read to its end."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_GRAPH_BYTES + 1)
    except OSError as exc:
        raise GraphError(f"cannot read the file: {exc.strerror or exc}", file=str(path)) from None
    if len(raw) > MAX_GRAPH_BYTES:
        raise YAMLSyntaxError(
            f"the file is larger than {MAX_GRAPH_BYTES} bytes (MAX_GRAPH_BYTES), the most maskgraph reads "
            "for a graph",
            file=str(path),
        )
    return raw


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
            f"no such graph file or shipped graph {shown(source)}{suggest(source, known)} (shipped: {', '.join(known)})"
        )
    elif isinstance(source, str):
        _check_size(source)
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
    raw = _read_bounded(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise YAMLSyntaxError("the file is not UTF-8 text (binary data?)", file=str(path)) from None
    return text, str(path)
