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
