"""State.reorder_rows: the per-row entries of a slot follow beam search's reorder of the cache."""

from __future__ import annotations

import pytest
import torch

import maskgraph as mg


def test_reorder_rows_moves_the_named_entries_and_leaves_the_rest():
    state = mg.State()
    slot = state.slot(1, "node")
    rows = torch.randn(4, 2, 5)
    shared = torch.randn(2, 3)
    slot.update(rows=rows, twin=rows, shared=shared, n=5, gone=None)
    order = torch.tensor([2, 2, 0, 3])
    state.reorder_rows(1, "node", ("rows", "twin", "gone", "absent"), order)
    assert torch.equal(slot["rows"], rows[order])
    assert slot["twin"] is slot["rows"]  # one tensor under two names is moved once
    assert slot["shared"] is shared and slot["n"] == 5 and slot["gone"] is None
    state.reorder_rows(0, "other", ("rows",), order)  # no slot: nothing to move
    assert state.peek(0, "other") is None


def test_reorder_rows_refuses_an_entry_that_is_not_one_row_per_batch_row():
    state = mg.State()
    slot = state.slot(0, "node")
    first = torch.randn(4, 3)
    slot.update(first=first, wrong=torch.randn(3, 3))
    with pytest.raises(mg.ShapeError, match=r"layer 0, node 'node', state entry 'wrong'.*3 rows.*4"):
        state.reorder_rows(0, "node", ("first", "wrong"), torch.tensor([1, 0, 2, 3]))
    assert slot["first"] is first  # checked before anything moved
    slot["wrong"] = 7
    with pytest.raises(mg.ShapeError, match=r"state entry 'wrong'.*tensor \(B, \.\.\.\), got int"):
        state.reorder_rows(0, "node", ("wrong",), torch.tensor([1, 0, 2, 3]))


def test_every_shipped_stateful_operator_names_its_per_row_state():
    """Beam search moves a slot's ``batch_rows`` with the cache; an operator that keeps state
    without naming them refuses beam search (tests/hf/test_beam_search.py)."""
    missing = [name for name, spec in mg.all_ops().items() if spec.stateful and spec.batch_rows is None]
    assert not missing, f"stateful operators without batch_rows: {missing}"


def test_reorder_rows_of_a_static_slot_rewrites_its_tensors_in_place():
    """A slot built over a static buffer (its ``static`` entry set) keeps its tensors' addresses,
    which the decode steps rewrite in place (maskgraph.static_keys.pin_addresses); the rows
    move all the same. Other slots get new tensors."""
    state = mg.State()
    static, growing = state.slot(0, "static"), state.slot(0, "growing")
    rows = torch.randn(4, 2, 5)
    static.update(lo=rows.clone(), static=5)
    static["twin"] = static["lo"]
    growing.update(lo=rows.clone(), static=None)
    lo, address = static["lo"], static["lo"].data_ptr()
    order = torch.tensor([3, 3, 1, 0])
    state.reorder_rows(0, "static", ("lo", "twin"), order)
    state.reorder_rows(0, "growing", ("lo",), order)
    assert static["lo"] is lo and lo.data_ptr() == address and static["twin"] is lo
    assert torch.equal(lo, rows[order])
    assert growing["lo"] is not rows and torch.equal(growing["lo"], rows[order])


def test_batch_rows_must_name_entries_in_a_tuple():
    """``batch_rows="lo"`` would read as the entries 'l' and 'o': refused at registration."""
    from maskgraph.registry import REGISTRY, operator
    from maskgraph.types import PortType

    def prepare(keys, values, params, slot, layer_idx):
        return {}

    for bad in ("lo", ("lo", 3), {"lo"}):
        with pytest.raises(ValueError, match=r"operator 'state_test_rows': batch_rows= must be a tuple"):
            operator(
                "state_test_rows",
                family="utility",
                output=PortType.MASK,
                prepare=prepare,
                stateful=True,
                batch_rows=bad,
            )
    assert "state_test_rows" not in REGISTRY
