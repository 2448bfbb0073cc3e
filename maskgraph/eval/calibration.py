"""The calibration files ``maskgraph calibrate`` wrote, found for every way a graph is evaluated.

``maskgraph eval``, ``maskgraph sweep`` and its ``--search`` all point a graph's unset Double
Sparsity or HashAttention file at the default one for the model in use
(:mod:`maskgraph.calibrate.defaults`); when that file is absent the error names its path and the
``maskgraph calibrate`` command that makes it, before any model loads.
"""

from __future__ import annotations

from typing import Any

from ..calibrate.defaults import with_default_calibration
from ..errors import MaskgraphError
from ..ir import Graph
from ..overrides import apply_overrides


def graph_calibration(graph: Graph, overrides: dict[str, Any], model: str) -> dict[str, Any]:
    """The graph parameters (name -> path) that point ``graph``'s unset calibration files, at
    ``overrides`` (those it does not have are ignored), at the defaults for ``model``."""
    mine = {k: v for k, v in overrides.items() if k in graph.params}
    fitted = apply_overrides(graph, mine, origin="-p") if mine else graph
    return with_default_calibration(fitted, model).overrides


def default_calibration(graphs: dict[str, Graph], overrides: dict[str, Any], model: str) -> dict[str, Any]:
    """The parameters that point every graph's unset calibration files (``graphs``: name or path
    -> graph) at the defaults for ``model``; refused when one graph sets such a parameter
    itself while another takes the default under the same name."""
    found: dict[str, Any] = {}
    for graph in graphs.values():
        found.update(graph_calibration(graph, overrides, model))
    for path, graph in graphs.items():
        clash = [k for k in found if graph.params.get(k) is not None and k not in overrides]
        if clash:
            raise MaskgraphError(
                f"{path} sets {clash[0]} itself while another graph takes the default file; "
                f"give -p {clash[0]}=FILE to use one file for both"
            )
    return found
