"""Eviction graphs under ``inject`` + ``model.generate`` on the shipped tiny model: the dense
prefill is shown to the operators (protocol ``dense_prefill`` gives what ``sparse`` gives),
the kept set shrinks below the keys seen, and requests do not share state."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import maskgraph as mg
from maskgraph.hf.models import tiny_model
from maskgraph.ops.zoo.eviction import kept_share

PROMPT, NEW = 70, 6
GRAPHS = {
    "snapkv": {"budget": 8, "window_size": 8, "kernel_size": 3},
    "h2o": {"heavy_size": 8, "recent_size": 8},
    "tova": {"budget": 16},
    "pyramidkv": {"budget": 0.2, "window_size": 8},
    "snapkv_quest": {
        "snap_budget": 20,
        "snap_window": 8,
        "page_size": 4,
        "heavy_size": 8,
        "sink_size": 2,
        "window_size": 4,
    },
}


def generate(model, graph, protocol, ids):
    with mg.inject(model, graph, protocol=protocol, overrides=GRAPHS[graph]) as handle:
        out = model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
        shares = {layer: kept_share(handle.state.slot(layer, "kept")) for layer in (0, 1)}
        return out[0, PROMPT:].tolist(), shares, handle.state


@pytest.mark.parametrize("graph", list(GRAPHS))
def test_generate_with_eviction(graph):
    model = tiny_model("llama")  # 2 layers, 4 query / 2 KV heads, head dim 16
    ids = torch.randint(1, 256, (1, PROMPT), generator=torch.Generator().manual_seed(2))
    tokens, shares, state = generate(model, graph, "dense_prefill", ids)
    again, shares_sparse, other = generate(model, graph, "sparse", ids)
    if graph != "snapkv_quest":  # its Quest is sparse in the prefill under protocol sparse
        assert tokens == again
        assert shares == shares_sparse
    seen = PROMPT + NEW - 1
    for layer, share in shares.items():
        assert share is not None and share < 0.6, (layer, share)
        assert state.slot(layer, "kept")["kept"].shape[-1] == seen
    if graph == "pyramidkv":
        assert shares[0] > shares[1]  # the deeper layer keeps less
    assert other is not state
    # a second request starts afresh: the same prompt gives the same tokens and sets
    assert generate(model, graph, "dense_prefill", ids)[:2] == (tokens, shares)


def test_eval_metrics_report_the_kept_cache_beside_the_density():
    """An eviction method's measured density is what each query attends; its kept cache is the
    share of keys it holds: equal for H2O's decode steps (every kept key is attended), below 1
    where a keep-everything method reports 1, and above the density where Quest chooses among
    SnapKV's keys."""
    from maskgraph.eval.metrics import MicroObserver, summarise

    model = tiny_model("llama")
    ids = torch.randint(1, 256, (1, PROMPT), generator=torch.Generator().manual_seed(2))
    found = {}
    for graph, overrides in (
        ("h2o", GRAPHS["h2o"]),
        ("snapkv_quest", GRAPHS["snapkv_quest"]),
        ("quest", {"page_size": 4, "sink_size": 2, "window_size": 4, "heavy_size": 0.2}),
    ):
        observer = MicroObserver()
        with mg.inject(model, graph, overrides=overrides, observer=observer) as handle:
            observer.state = lambda handle=handle: handle.state
            model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
        found[graph] = summarise(observer.records)["overall"]
        if graph == "h2o":
            for record in observer.records:  # decode steps: the 16 kept keys and the new one
                assert record["cache"] == pytest.approx([17 / record["K"]] * 4)
                assert record["density"] == pytest.approx(record["cache"])
    assert found["quest"]["cache"] == 1.0 and found["quest"]["density"] < 1.0
    assert found["snapkv_quest"]["density"] < found["snapkv_quest"]["cache"] < 1.0


def test_a_rolling_sliding_window_layer_is_refused_under_eviction():
    """Gemma3's layer 0 keeps a window of 6 keys: once it rolls, H2O's evicted keys cannot be
    tracked, so generation stops with the reason; with that layer dense it runs."""
    model = tiny_model("gemma3")
    ids = torch.randint(1, 256, (1, 12), generator=torch.Generator().manual_seed(3))
    with pytest.raises(mg.NotSupportedError, match=r"graph 'h2o', node 'kept'.*rolled.*layers: dense"):
        with mg.inject(model, "h2o", overrides=GRAPHS["h2o"]):
            model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    graph = mg.load_graph("h2o", overrides=GRAPHS["h2o"])
    dense = dataclasses.replace(graph, layers=dataclasses.replace(graph.layers, dense=[0]))
    with mg.inject(model, dense) as handle:
        model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
        assert handle.state.slot(1, "kept")["kept"].shape[-1] == 12 + 3 - 1
