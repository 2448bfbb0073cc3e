"""The operator registry: names, typed ports, parameter schemas and the functions behind them.

An operator is registered with :func:`operator`::

    @operator(
        "sink", family="fixed", output=PortType.MASK,
        inputs=[Port("keys", PortType.KEYS)],
        params=[Param("size", "size", doc="number (int) or share of K (float) of first keys")],
        doc="The first `size` keys (attention sinks).",
    )
    def sink(env, *, size):
        ...

The function receives an :class:`~maskgraph.env.Env` (the tensors of one query chunk) and its
wired inputs and parameters as keyword arguments, and returns its output tensor.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .display import shown
from .errors import ParameterError, UnknownOperatorError
from .types import PortType

if TYPE_CHECKING:
    from .lowering import SparseDeclaration

FAMILIES = ("fixed", "estimator", "selector", "sampler", "combinator", "utility")

_REQUIRED = object()

#: Parameter kinds and what they accept.
PARAM_KINDS = {
    "int": "an integer",
    "float": "a number",
    "size": "an int >= 1 (tokens) or a float in (0, 1] (share of the keys)",
    "offset": "an int >= 0 (tokens) or a float in [0, 1] (share of the keys)",
    "bool": "true or false",
    "str": "a string",
    "choice": "one of the listed choices",
    "path": "a file path (string) or null",
    "seed": "an integer seed in [-2**63, 2**64 - 1] or null",
}

#: The seeds torch's generators take (``torch.Generator.manual_seed``).
SEED_RANGE = (-(2**63), 2**64 - 1)


def _text_number_hint(value: Any) -> str:
    """A hint for numbers that YAML read as text: '5e-2' (YAML 1.1 needs a dot: 5.0e-2)."""
    if not isinstance(value, str):
        return ""
    if len(value) > 40:  # no typo of a number, and not worth echoing
        return ""
    try:
        number = float(value)
    except ValueError:
        return ""
    if "e" in value.lower() and "." not in value:
        mantissa, _, exponent = value.lower().partition("e")
        return f"; YAML reads {value!r} as text: write {mantissa}.0e{exponent} or {number:g} (no quotes)"
    return f"; write {value} without quotes to make it a number"


def _bound(value: float) -> str:
    """A range bound as text: integers in full (2147483648, not 2.14748e+09)."""
    if float(value).is_integer() and abs(value) < 2**63:
        return str(int(value))
    return f"{value:g}"


@dataclass(frozen=True)
class Param:
    """One parameter of an operator.

    ``kind`` is one of :data:`PARAM_KINDS`; ``low``/``high`` bound numbers (inclusive unless
    ``low_open``/``high_open``); ``limit`` says why a bound is where it is (shown when a value
    is out of range); ``choices`` lists the values of a ``choice``.
    """

    name: str
    kind: str
    default: Any = _REQUIRED
    doc: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    limit: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def describe(self) -> str:
        """Human text of what this parameter accepts."""
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        text = PARAM_KINDS[self.kind]
        if self.low is not None or self.high is not None:
            lo = "(" if self.low_open else "["
            hi = ")" if self.high_open else "]"
            lo_v = "-inf" if self.low is None else _bound(self.low)
            hi_v = "inf" if self.high is None else _bound(self.high)
            text += f" in {lo}{lo_v}, {hi_v}{hi}"
        return text

    def check(self, value: Any, *, node: str | None = None) -> Any:
        """Return ``value`` if valid for this parameter, else raise :class:`ParameterError`."""

        def bad(why: str) -> ParameterError:
            reason = f"; {self.limit}" if self.limit and why == "out of range" else ""
            return ParameterError(
                f"{why} (got {shown(value)}); expected {self.describe()}{reason}{_text_number_hint(value)}",
                node=node,
                param=self.name,
            )

        kind = self.kind
        if kind == "bool":
            if not isinstance(value, bool):
                raise bad("wrong type")
            return value
        if kind in ("str", "path"):
            if value is None and kind == "path":
                return value
            if not isinstance(value, str):
                raise bad("wrong type")
            return value
        if kind == "choice":
            if value not in self.choices:
                raise bad("not a valid choice")
            return value
        if kind == "seed":
            if value is None:
                return value
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad("wrong type")
            if not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
                raise bad("out of range")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("wrong type")
        if isinstance(value, float) and not math.isfinite(value):
            raise bad("not a finite number")
        if kind == "int" and not isinstance(value, int):
            raise bad("wrong type")
        if kind in ("size", "offset"):
            least = 1 if kind == "size" else 0
            if isinstance(value, int):
                if value < least:
                    raise bad("out of range")
            elif not (0.0 < value <= 1.0 or (kind == "offset" and value == 0.0)):
                raise bad("out of range")
            if abs(value) > 2**40:
                raise bad("out of range")
            return value
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise bad("out of range")
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise bad("out of range")
        if abs(value) > 2**53:
            raise bad("out of range")
        return value


@dataclass(frozen=True)
class Port:
    """A named, typed input of an operator. ``variadic`` ports take a list of sources."""

    name: str
    type: PortType
    optional: bool = False
    variadic: bool = False
    doc: str = ""


@dataclass
class OpSpec:
    """Everything known about one operator.

    ``fn(env, **inputs, **params)`` computes the output for one query chunk.
    ``prepare(keys, values, params, slot, layer_idx)``, if given, runs once per attention call
    before the chunks, outside any compiled region; it may read and update the per-(layer, node)
    ``slot`` (a dict, the operator's State) and returns a dict of tensors that ``fn`` receives as
    ``prep``.
    ``validate(node, inputs)``, if given, checks a node's wiring beyond what the port
    types state (``node`` the :class:`~maskgraph.ir.Node`, ``inputs`` its wired inputs, graph
    inputs filled in) when the graph is validated; it raises :class:`WiringError` or
    :class:`ParameterError` naming the port or parameter.
    ``check_params(params)``, if given, checks the node's parameters together (each
    already valid on its own, defaults filled in), e.g. a product that sizes a tensor; it raises
    :class:`ParameterError` naming a parameter and saying why.
    ``check_model(params, model)``, if given, checks the node's parameters against the
    transformers model a graph is injected into (a calibration file made for another model) and
    raises :class:`CalibrationError` saying which model the file was made for.
    ``static_buffers``: True where the operator's prepare reads a static key buffer (a token
    count with the keys), else why not (a string) or False.
    ``calibration``: the parameter that names the operator's calibration file, which
    ``maskgraph calibrate <name>`` makes (the operator's name with ``-`` for ``_``; see
    docs/calibration.md), or None.
    ``sparse``: how the operator runs in sparse mode (:mod:`maskgraph.lowering`: a
    ``MaskLowering``, an estimator's ``EstimatorLowering``, or ``NotSparse(why)``), or None.
    ``observes``: ``prepare`` also receives ``observed=``, a
    :class:`~maskgraph.state.Observation` holding the call's queries (also for a prefill that
    runs dense under protocol ``dense_prefill``).
    ``feedback(slot, feedback, params, layer_idx)``, if given, runs after each attention call
    with a :class:`~maskgraph.state.AttentionFeedback` (the attention probabilities of the
    call's kept keys, summed over its queries, and those of its last query) and updates
    ``slot``; simulate mode only (sparse mode refuses the graph, naming the node).
    ``kept(slot)``, if given (an operator that evicts keys), returns the keys the operator's
    slot keeps, (B, H, K) bool with H = Hkv or 1, or None before its first call: the cache the
    method must hold (``maskgraph eval``'s ``cache`` metric).
    ``batch_rows``: the names (a tuple of str) of the slot's entries that hold one row per
    batch row — tensors (B, …), row b describing the keys of the cache's row b. Beam search
    reorders the cache's rows between steps; :meth:`maskgraph.state.State.reorder_rows` then
    moves these rows with them (row b takes what row ``beam_idx[b]`` held); every other entry
    is shared by the rows and stays.
    None (the default): the slot cannot follow a reorder, and beam search over a graph whose
    node has filled its slot raises NotSupportedError naming the node.
    """

    name: str
    family: str
    inputs: tuple[Port, ...]
    output: PortType
    params: tuple[Param, ...]
    fn: Callable[..., Any]
    doc: str = ""
    paper: str = ""
    prepare: Callable[..., dict] | None = None
    deterministic: bool = True
    stateful: bool = False
    validate: Callable[..., None] | None = None
    check_params: Callable[[dict[str, Any]], None] | None = None
    check_model: Callable[[dict[str, Any], Any], None] | None = None
    static_buffers: bool | str = False
    calibration: str | None = None
    sparse: SparseDeclaration | None = None
    observes: bool = False
    feedback: Callable[..., None] | None = None
    kept: Callable[[dict], Any] | None = None
    batch_rows: tuple[str, ...] | None = None

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def port(self, name: str) -> Port | None:
        return next((p for p in self.inputs if p.name == name), None)


REGISTRY: dict[str, OpSpec] = {}


def operator(
    name: str,
    *,
    family: str,
    output: PortType,
    inputs: list[Port] | tuple[Port, ...] = (),
    params: list[Param] | tuple[Param, ...] = (),
    doc: str = "",
    paper: str = "",
    prepare: Callable[..., dict] | None = None,
    deterministic: bool = True,
    stateful: bool = False,
    validate: Callable[..., None] | None = None,
    check_params: Callable[[dict[str, Any]], None] | None = None,
    check_model: Callable[[dict[str, Any], Any], None] | None = None,
    static_buffers: bool | str = False,
    calibration: str | None = None,
    sparse: SparseDeclaration | None = None,
    observes: bool = False,
    feedback: Callable[..., None] | None = None,
    kept: Callable[[dict], Any] | None = None,
    batch_rows: tuple[str, ...] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as operator ``name`` (see module docstring)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if (observes or feedback is not None) and (prepare is None or not stateful):
        raise ValueError(f"operator {name!r}: observes= and feedback= need prepare= and stateful=True")
    if batch_rows is not None and prepare is None:
        raise ValueError(f"operator {name!r}: batch_rows= names entries of the slot that prepare= fills")
    if batch_rows is not None and (
        not isinstance(batch_rows, (tuple, list)) or not all(isinstance(n, str) for n in batch_rows)
    ):
        raise ValueError(
            f"operator {name!r}: batch_rows= must be a tuple (or list) of the slot's entry names, "
            f"e.g. ('lo', 'hi'), got {batch_rows!r}"
        )

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in REGISTRY:
            raise ValueError(f"operator {name!r} registered twice")
        REGISTRY[name] = OpSpec(
            name=name,
            family=family,
            inputs=tuple(inputs),
            output=output,
            params=tuple(params),
            fn=fn,
            doc=doc or (fn.__doc__ or "").strip(),
            paper=paper,
            prepare=prepare,
            deterministic=deterministic,
            stateful=stateful,
            validate=validate,
            check_params=check_params,
            check_model=check_model,
            static_buffers=static_buffers,
            calibration=calibration,
            sparse=sparse,
            observes=observes,
            feedback=feedback,
            kept=kept,
            batch_rows=None if batch_rows is None else tuple(batch_rows),
        )
        return fn

    return wrap


def get_op(name: Any, *, node: str | None = None) -> OpSpec:
    """Look up an operator; unknown names raise with close suggestions."""
    if isinstance(name, str) and name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(str(name)[:100], list(REGISTRY), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownOperatorError(
        f"unknown operator {shown(name)}{hint} (known: {', '.join(sorted(REGISTRY))})", node=node
    )


def all_ops() -> dict[str, OpSpec]:
    """All registered operators by name."""
    return dict(REGISTRY)


def check_params(spec: OpSpec, given: dict[str, Any], *, node: str | None = None) -> dict[str, Any]:
    """Validate ``given`` against ``spec``; return the full parameter dict with defaults."""
    out: dict[str, Any] = {}
    for key in given:
        if spec.param(key) is None:
            names = [p.name for p in spec.params]
            close = difflib.get_close_matches(str(key)[:100], names, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            valid = ", ".join(names) if names else "none"
            raise ParameterError(
                f"unknown parameter of operator '{spec.name}'{hint} (valid: {valid})",
                node=node,
                param=str(key),
            )
    for p in spec.params:
        if p.name in given:
            out[p.name] = p.check(given[p.name], node=node)
        elif p.required:
            raise ParameterError(
                f"missing required parameter of operator '{spec.name}' ({p.describe()})",
                node=node,
                param=p.name,
            )
        else:
            out[p.name] = p.default
    rule = spec.check_params
    if rule is not None:
        try:
            rule(out)
        except ParameterError as exc:
            raise ParameterError(exc.reason, node=node, param=exc.param) from None
    return out
