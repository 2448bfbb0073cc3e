"""Every shipped stateful operator names its per-row state (``batch_rows``) exactly.

Beam search moves the declared entries of each slot with the cache's rows
(``State.reorder_rows``) and leaves the others as they are. So each operator runs a request in
the smallest shipped graph that uses it — a causal prefill, then decode steps of one query,
simulate mode — over a batch of distinct rows and over the same batch with its rows permuted.
An entry that changes with the permutation must be declared and follow it row for row; an
entry left undeclared must not change; every declared entry must be written. An operator added
later that keeps a per-row entry without declaring it fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

import maskgraph as mg

B, HQ, HKV, D = 3, 4, 2, 16
PREFILL, STEPS = 20, 3
PERMUTED = torch.tensor([2, 0, 1])
#: Small sizes for the graphs' parameters (each graph takes those it has).
SMALL = {
    "sink_size": 1,
    "window_size": 4,  # SnapKV: its observation window
    "heavy_size": 4,
    "recent_size": 2,
    "budget": 6,
    "kernel_size": 3,
    "page_size": 2,
    "pq_bits": 3,
    "hat_bits": 32,
    "socket_tables": 8,
    "socket_bits": 4,
    "lsh_l": 8,
    "lsh_k": 4,
    "seed": 0,
}


def stateful_ops() -> list[str]:
    return sorted(name for name, spec in mg.all_ops().items() if spec.stateful)


def smallest_graph_using(op: str) -> str:
    """The shipped graph with the fewest nodes that has a node of ``op``."""
    using = [
        name
        for name in mg.shipped_graphs()
        if any(node.op == op for node in mg.load_graph(name).nodes.values())
    ]
    assert using, f"stateful operator '{op}' is in no shipped graph: give it a case here"
    return min(using, key=lambda name: (len(mg.load_graph(name).nodes), name))


def calibration(graph: mg.Graph, tmp_path) -> dict[str, str]:
    """Random calibration files for the graph's parameters that name one."""
    out = {}
    if "hat_weights" in graph.params:
        from maskgraph.ops.zoo.hashattention import random_hash_weights, save_hash_weights

        path = tmp_path / "hat.safetensors"
        save_hash_weights(path, random_hash_weights(1, HQ, HKV, D, bits=32, hidden=8, seed=0))
        out["hat_weights"] = str(path)
    if "ds_channels" in graph.params:
        from maskgraph.ops.zoo.double_sparsity import save_channels

        g = torch.Generator().manual_seed(0)
        channels = torch.stack([torch.randperm(D, generator=g) for _ in range(HKV)]).view(1, HKV, D)
        path = tmp_path / "ds.safetensors"
        save_channels(path, channels)
        out["ds_channels"] = str(path)
    return out


def request(attn, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> Iterator[mg.State]:
    """The State after each call of a request: a causal prefill of PREFILL tokens, then STEPS
    decode steps."""
    state = mg.State()
    attn(
        queries[:, :, :PREFILL],
        keys[:, :, :PREFILL],
        values[:, :, :PREFILL],
        state=state,
        causal=True,
    )
    yield state
    for j in range(PREFILL, PREFILL + STEPS):
        attn(queries[:, :, j : j + 1], keys[:, :, : j + 1], values[:, :, : j + 1], state=state)
        yield state


def same(a: Any, b: Any) -> bool:
    """Equal entries: tensors of one shape and dtype within float tolerance, containers item by
    item, anything else by ``==``."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.is_floating_point():
            return torch.allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)
        return torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("op", stateful_ops())
def test_an_operators_batch_rows_are_exactly_its_per_row_state(op, tmp_path):
    spec = mg.get_op(op)
    name = smallest_graph_using(op)
    graph = mg.load_graph(name)
    overrides = {key: value for key, value in SMALL.items() if key in graph.params}
    graph = mg.load_graph(name, overrides={**overrides, **calibration(graph, tmp_path)})
    attn = mg.compile(graph)
    g = torch.Generator().manual_seed(7)
    k = PREFILL + STEPS
    queries = torch.randn(B, HQ, k, D, generator=g) * 2
    keys = torch.randn(B, HKV, k, D, generator=g)
    values = torch.randn(B, HKV, k, D, generator=g)
    declared = set(spec.batch_rows or ())
    nodes = [node for node, n in graph.nodes.items() if n.op == op]
    written: set[str] = set()
    calls = zip(request(attn, queries, keys, values), request(attn, *permuted(queries, keys, values)))
    for call, (state, moved) in enumerate(calls):
        for node in nodes:
            slot, other = state.slot(0, node), moved.slot(0, node)
            where = f"graph '{name}', node '{node}' (op '{op}'), call {call}"
            assert slot.keys() == other.keys(), where
            written |= {entry for entry, value in slot.items() if value is not None}
            for entry, value in slot.items():
                if entry in declared:
                    assert isinstance(value, torch.Tensor) and value.shape[0] == B, f"{where}: '{entry}'"
                    assert same(other[entry], value[PERMUTED]), (
                        f"{where}: per-row entry '{entry}' does not follow the permuted rows"
                    )
                else:
                    assert same(other[entry], value), (
                        f"{where}: entry '{entry}' changes when the batch's rows are permuted, but "
                        f"the operator's batch_rows {sorted(declared)} leave it out (beam search "
                        "would not move it)"
                    )
    assert declared <= written, (
        f"graph '{name}', op '{op}': declares batch_rows {sorted(declared)}, but a request wrote "
        f"only {sorted(written)}: a declared entry that is never written"
    )


def permuted(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t[PERMUTED] for t in tensors]
