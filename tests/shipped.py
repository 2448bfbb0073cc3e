"""The shipped graphs, grouped as the tests need them: derived from the registry and from what
``mg.compile`` accepts, so a graph added to graphs/ is tested without editing a list."""

from __future__ import annotations

import functools

import maskgraph as mg
from maskgraph.errors import NotSupportedError


@functools.cache
def graphs_using(family: str, *, except_ops: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Shipped graphs with a node whose operator is of ``family`` (and not in ``except_ops``)."""
    ops = {name for name, spec in mg.all_ops().items() if spec.family == family} - set(except_ops)
    return tuple(
        name
        for name in sorted(mg.shipped_graphs())
        if any(node.op in ops for node in mg.load_graph(name).nodes.values())
    )


@functools.cache
def sparse_graphs() -> tuple[str, ...]:
    """Shipped graphs that ``mg.compile(..., mode="sparse")`` accepts."""
    names = []
    for name in sorted(mg.shipped_graphs()):
        try:
            mg.compile(name, mode="sparse")
        except NotSupportedError:
            continue
        names.append(name)
    return tuple(names)


def shrunk(name: str, small: dict, **extra) -> dict:
    """The entries of ``small`` that graph ``name`` has as parameters, then ``extra``."""
    params = mg.load_graph(name).params
    return {**{key: value for key, value in small.items() if key in params}, **extra}


def uses(name: str, *ops: str) -> bool:
    """Whether shipped graph ``name`` has a node of one of ``ops``."""
    return any(node.op in ops for node in mg.load_graph(name).nodes.values())
