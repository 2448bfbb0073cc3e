"""From a graph to a sparse plan: the lowering of every node, or the reason it cannot run sparse."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import NotSupportedError
from ..ir import Graph
from ..lowering import BudgetFn, EstimatorLowering, MaskLowering, NotSparse, PositionFn, no_budget
from ..lowering.chunk import SparseChunk, make_estimator
from ..registry import get_op
from ..types import GRAPH_INPUTS, PortType
from ..validate import wired_inputs


@dataclass(frozen=True)
class Step:
    """One node: its lowering, wired inputs (port -> node name or list) and parameters;
    ``budget``, ``scores_keys`` and ``positions`` as its operator declares them
    (:class:`MaskLowering`)."""

    name: str
    op: str
    lower: Callable[..., Any]
    inputs: dict[str, Any]
    params: dict[str, Any]
    has_prep: bool
    budget: BudgetFn = no_budget
    scores_keys: bool = False
    positions: PositionFn | None = None


def _refuse(name: str, op: str, why: str) -> NotSupportedError:
    return NotSupportedError(f"mode='sparse': node '{name}' (op '{op}'): {why}")


def _lowering(name: str, spec) -> Callable[..., Any]:
    """The node's lowering from its operator's declaration, or the refusal naming the node."""
    declared = spec.sparse
    if isinstance(declared, MaskLowering):
        return declared.lower
    if isinstance(declared, NotSparse):
        raise _refuse(name, spec.name, declared.reason)
    if spec.family == "sampler" or not spec.deterministic:
        raise _refuse(
            name,
            spec.name,
            "it samples keys with inclusion probabilities below 1 (weighted 1/p), so its mask is "
            "not an index set; use mode='simulate'",
        )
    if spec.output == PortType.SCORES:
        if not isinstance(declared, EstimatorLowering):
            raise _refuse(
                name,
                spec.name,
                "the estimator declares no sparse scoring (sparse=EstimatorLowering(...): block "
                "scores from its caches), so sparse mode cannot score keys without running it "
                "over all of them",
            )
        return make_estimator(declared)
    if spec.output == PortType.PARTIAL:
        raise _refuse(
            name, spec.name, "a Partial (attention over all kept keys) is only built in simulate mode"
        )
    raise _refuse(
        name,
        spec.name,
        "no sparse lowering for this operator (it declares no sparse=MaskLowering(...): its mask "
        "is not an index set)",
    )


def build_plan(graph: Graph) -> list[Step]:
    """The steps of ``graph`` in topological order; raises NotSupportedError naming the node."""
    steps = []
    for name in graph.topo_order():
        node = graph.nodes[name]
        spec = get_op(node.op, node=name)
        lower = _lowering(name, spec)
        inputs = {
            port: src
            for port, src in wired_inputs(graph, name).items()
            if isinstance(src, list) or src not in GRAPH_INPUTS
        }
        declared = spec.sparse if isinstance(spec.sparse, MaskLowering) else MaskLowering(lower)
        params = graph.node_params(name)
        has_prep = spec.prepare is not None
        steps.append(
            Step(
                name,
                spec.name,
                lower,
                inputs,
                params,
                has_prep,
                budget=declared.budget,
                scores_keys=declared.scores_keys,
                positions=declared.positions,
            )
        )
    return steps


def structure(steps: list[Step], output: str) -> tuple:
    """What the generated computation depends on besides parameter values (a cache key)."""
    wiring = tuple(
        (
            s.name,
            s.op,
            tuple((p, tuple(v) if isinstance(v, list) else v) for p, v in s.inputs.items()),
            s.has_prep,
        )
        for s in steps
    )
    return wiring + (output,)


def run_plan(steps: list[Step], output: str, ctx: SparseChunk, prep: dict, params: tuple[dict, ...]) -> Any:
    """Evaluate the steps for one query chunk with ``params[i]`` for step i; return the output
    node's IndexSet. Parameters come separately so that one compiled function serves every
    parameter setting of a graph (integer sizes stay symbolic)."""
    values: dict[str, Any] = {}
    for step, step_params in zip(steps, params):
        inputs = {
            port: [values[s] for s in src] if isinstance(src, list) else values[src]
            for port, src in step.inputs.items()
        }
        node_prep = prep.get(step.name) if step.has_prep else None
        values[step.name] = step.lower(ctx, step.name, inputs, step_params, node_prep)
    return values[output]


def budget_split(steps: list[Step], output: str, num_keys: int) -> tuple[int, int]:
    """(read in place, gathered) entries per query of the output IndexSet at ``num_keys`` keys,
    from each step's declared budget (runs are slices; selections are gathered)."""
    sizes: dict[str, tuple[int, int]] = {}
    for step in steps:
        inputs = {
            port: [sizes[s] for s in src] if isinstance(src, list) else sizes[src]
            for port, src in step.inputs.items()
        }
        sizes[step.name] = step.budget(step.params, inputs, num_keys)
    return sizes[output]


def budget(steps: list[Step], output: str, num_keys: int) -> int:
    """Padded entries per query of the output IndexSet for ``num_keys`` keys (sink + window + k)."""
    return sum(budget_split(steps, output, num_keys))
