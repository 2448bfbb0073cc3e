"""Estimator caches under ``inject`` + ``model.generate`` with transformers' default cache.

A DynamicCache hands the graph a key tensor that grows by one row per decode step. Each
estimator's cache (Quest page bounds, PQ codes, hash bits, Double Sparsity labels, SOCKET
codes) must then process only the new key — the rows of earlier keys are kept — in both
modes, for every layer. The check wraps the operator's ``prepare`` and reads the range of
keys each call (re)computed (``slot["updated"]``, set by every estimator).
"""

from __future__ import annotations

import pytest
import torch

import maskgraph as mg
from maskgraph.errors import NotSupportedError
from maskgraph.hf.models import tiny_model
from maskgraph.ops.zoo.double_sparsity import save_channels
from maskgraph.ops.zoo.hashattention import random_hash_weights, save_hash_weights

LAYERS, HQ, HKV, D = 2, 4, 2, 16
PROMPT, NEW = 70, 5
PAGE = 4
GRAPHS = {
    "quest": {"page_size": PAGE},
    "pqcache": {},
    "hashattention": {},
    "double_sparsity": {},
    "socket": {},
}


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("calib")
    weights = root / "hash.safetensors"
    save_hash_weights(weights, random_hash_weights(LAYERS, HQ, HKV, D, 32, 8, seed=0))
    gen = torch.Generator().manual_seed(1)
    channels = torch.stack(
        [torch.stack([torch.randperm(D, generator=gen) for _ in range(HKV)]) for _ in range(LAYERS)]
    )
    path = root / "channels.safetensors"
    save_channels(path, channels, {"model": "random"})
    return {"hashattention": {"hat_weights": str(weights)}, "double_sparsity": {"ds_channels": str(path)}}


def estimator_specs(graph: mg.Graph) -> list:
    return [
        mg.get_op(graph.nodes[n].op) for n in graph.nodes if mg.get_op(graph.nodes[n].op).prepare is not None
    ]


#: sparse mode runs Triton's interpreter on the CPU: one graph in the default run, all with --runslow
CASES = [
    pytest.param(name, mode, marks=[pytest.mark.slow] if mode == "sparse" and name != "quest" else [])
    for name in GRAPHS
    for mode in ("simulate", "sparse")
]


@pytest.mark.parametrize("name, mode", CASES)
def test_generate_updates_only_the_new_keys(name, mode, calibration, monkeypatch):
    overrides = {"sink_size": 2, "window_size": 4, "heavy_size": 0.2, **GRAPHS[name]}
    overrides.update(calibration.get(name, {}))
    graph = mg.load_graph(name, overrides=overrides)
    if mode == "sparse":
        try:
            mg.compile(graph, mode="sparse")
        except NotSupportedError:
            pytest.skip(f"{name} has no sparse mode")
    updates: list[tuple[int, int, int]] = []  # (layer, first key recomputed, key count)
    for spec in estimator_specs(graph):
        original = spec.prepare

        def spy(keys, values, params, slot, layer_idx, *args, _original=original, **kwargs):
            out = _original(keys, values, params, slot, layer_idx, *args, **kwargs)
            start, stop = slot["updated"]
            assert stop == keys.shape[2]
            updates.append((layer_idx, start, stop))
            return out

        monkeypatch.setattr(spec, "prepare", spy)
    model = tiny_model("llama")  # 2 layers, 4 query / 2 KV heads, head dim 16
    ids = torch.randint(1, 256, (1, PROMPT), generator=torch.Generator().manual_seed(2))
    with mg.inject(model, graph, mode=mode, protocol="sparse"):
        model.generate(ids, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)
    for layer in range(LAYERS):
        seen = [(start, stop) for lay, start, stop in updates if lay == layer]
        keys = [stop for _, stop in seen]
        assert keys == list(range(PROMPT, PROMPT + NEW)), (layer, seen)  # one call per step
        first, *steps = seen
        assert first[0] == 0
        for start, stop in steps:
            redone = stop - 1 - ((stop - 1) // PAGE) * PAGE if name == "quest" else 0
            assert start == stop - 1 - redone, (layer, seen)  # Quest: the partial last page
