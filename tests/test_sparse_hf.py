"""Sparse mode inside the HuggingFace injection: same logits and generations as simulate mode."""

from __future__ import annotations

import pytest
import torch

import maskgraph as mg

GRAPH = {"sink_size": 4, "window_size": 8, "heavy_size": 6}


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_sparse_injection_matches_simulate(arch):
    models = pytest.importorskip("maskgraph.hf.models")
    model = models.tiny_model(arch)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (2, 40), generator=gen)
    keep = torch.ones_like(ids)
    keep[0, :5] = 0  # left padding in row 0
    graph = mg.load_graph("graphs/oracle_topk.yaml", overrides=GRAPH)
    logits, tokens = {}, {}
    for mode in ("simulate", "sparse"):
        with mg.inject(model, graph, mode=mode, protocol="sparse"):
            logits[mode] = model(input_ids=ids, attention_mask=keep).logits
        with mg.inject(model, graph, mode=mode):
            tokens[mode] = model.generate(ids, attention_mask=keep, max_new_tokens=5, do_sample=False)
    err = (logits["sparse"] - logits["simulate"]).norm() / logits["simulate"].norm()
    assert err < 1e-4
    assert torch.equal(tokens["sparse"], tokens["simulate"])
