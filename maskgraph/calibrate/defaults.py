"""Calibration files found where ``maskgraph calibrate`` writes them.

A graph whose Double Sparsity or HashAttention node has no file set (``ds_channels: null``,
``hat_weights: null`` in the shipped graphs) is pointed at the file ``maskgraph calibrate``
wrote for the model in use (:func:`maskgraph.calibrate.models.default_out`); when that file
does not exist, the error names its path and the command that makes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import CalibrationError
from ..ir import PARAM_REF, Graph
from ..registry import get_op
from .formats import KINDS
from .models import default_out


@dataclass(frozen=True)
class CalibratedOp:
    """An operator that reads a calibration file: its path parameter and the file's kind (the
    operator's name, as the operator declares it: ``@operator(..., calibration=PARAM)``)."""

    param: str
    kind: str

    @property
    def command(self) -> str:
        """The ``maskgraph calibrate`` method that writes the file."""
        return self.kind.replace("_", "-")


def calibrated_op(op: str) -> CalibratedOp | None:
    """The calibration file operator ``op`` reads, or None if it reads none."""
    spec = get_op(op)
    if spec.calibration is None:
        return None
    if spec.name not in KINDS:
        raise CalibrationError(
            f"operator {spec.name!r} declares a calibration file, but `maskgraph calibrate` makes "
            f"none of that kind (it makes: {', '.join(sorted(KINDS))})"
        )
    return CalibratedOp(spec.calibration, spec.name)


@dataclass(frozen=True)
class DefaultCalibration:
    """``graph`` with its unset calibration files pointed at the defaults; ``overrides``: the
    graph parameters that were set (name -> path), to pass where a graph is loaded again."""

    graph: Graph
    overrides: dict[str, Any] = field(default_factory=dict)


def with_default_calibration(graph: Graph, model: str) -> DefaultCalibration:
    """Point each calibrated node of ``graph`` whose file is unset at the file ``maskgraph
    calibrate ... --model <model>`` wrote by default; a :class:`CalibrationError` naming that
    path and the command when it is absent. ``model``: the name given to ``--model``."""
    from .models import model_label

    overrides: dict[str, Any] = {}
    for name, node in graph.nodes.items():
        spec = calibrated_op(node.op)
        if spec is None or graph.resolve(node.params.get(spec.param)) is not None:
            continue
        path = default_out(model_label(model), spec.kind)
        setting = _graph_param(node.params.get(spec.param))
        if not path.is_file():
            set_it = f"or set -p {setting}=FILE" if setting else f"or set the node's {spec.param}"
            raise CalibrationError(
                f"graph {graph.name!r}, node {name!r}: no {spec.param} file for model {model!r} at "
                f"{path}; make it with `maskgraph calibrate {spec.command} --model {model}` ({set_it})"
            )
        if setting is None:
            raise CalibrationError(
                f"graph {graph.name!r}, node {name!r}: {spec.param} is null in the node itself; "
                f"set it to a file such as {path}, or to a graph parameter"
            )
        overrides[setting] = str(path)
    return DefaultCalibration(graph.with_overrides(overrides) if overrides else graph, overrides)


def _graph_param(value: Any) -> str | None:
    """``"$ds_channels"`` -> ``"ds_channels"``; None for a literal value."""
    if isinstance(value, str) and value.startswith(PARAM_REF):
        return value[len(PARAM_REF) :]
    return None
