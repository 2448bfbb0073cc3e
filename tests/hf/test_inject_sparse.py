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


@pytest.mark.slow  # the interpreter runs every layer's kernels: about a minute a graph
@pytest.mark.parametrize("name", ["quest", "hashattention", "double_sparsity"])
def test_a_padded_batch_is_masked_by_the_estimator_kernels(name, tmp_path, monkeypatch):
    """A left-padded batch's prompt and decode steps through the estimators' Triton score
    kernels (the interpreter here), which apply transformers' padding mask themselves: the
    same logits and generations as simulate mode."""
    from test_inject import _calibration_overrides

    from maskgraph.lowering import keymask
    from maskgraph.triton_util import triton_installed

    if not triton_installed():
        pytest.skip("needs triton with its interpreter on (tests/conftest.py)")
    models = pytest.importorskip("maskgraph.hf.models")
    applied = []  # the query counts of the calls whose mask a kernel took
    real = keymask.kernel_mask

    def spy(env, *a):
        made = real(env, *a)
        if made is not None and made[0] is not None:
            applied.append(env.Q)
        return made

    monkeypatch.setattr(keymask, "kernel_mask", spy)
    model = models.tiny_model("llama")
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (2, 24), generator=gen)
    keep = torch.ones_like(ids)
    keep[1, :7] = 0  # left padding in row 1
    overrides = {"sink_size": 2, "window_size": 4, "heavy_size": 8, **_calibration_overrides(name, tmp_path)}
    if name == "quest":
        overrides["page_size"] = 4
    graph = mg.load_graph(name, overrides=overrides)
    logits, tokens = {}, {}
    for mode in ("simulate", "sparse"):
        triton = {"kernel": "triton"} if mode == "sparse" else {}  # the Triton top-k and gather too
        with mg.inject(model, graph, mode=mode, protocol="sparse", **triton):
            logits[mode] = model(input_ids=ids, attention_mask=keep).logits
            tokens[mode] = model.generate(
                ids, attention_mask=keep, max_new_tokens=3, do_sample=False, pad_token_id=0
            )
    assert 1 in applied and 24 in applied  # decode steps and the prompt reached the kernels
    err = (logits["sparse"] - logits["simulate"]).norm() / logits["simulate"].norm()
    assert err < 1e-4
    assert torch.equal(tokens["sparse"], tokens["simulate"])


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_a_position_only_prompt_runs_as_one_flex_call_per_layer(arch, monkeypatch):
    """streaming_llm with protocol="sparse": the prompt (Q = K, causal, with and without left
    padding; Gemma3's sliding layers bring their window mask) and a chunk of queries after
    cached keys each run as one FlexAttention call per layer, with simulate mode's logits; the
    generated tokens agree too."""
    from transformers import DynamicCache

    from maskgraph.sparse import flex

    models = pytest.importorskip("maskgraph.hf.models")
    calls = []
    real = flex.FlexPrefill.__call__

    def spy(self, queries, *args, **kwargs):
        calls.append(queries.shape[2])
        return real(self, queries, *args, **kwargs)

    monkeypatch.setattr(flex.FlexPrefill, "__call__", spy)
    model = models.tiny_model(arch)
    layers = model.config.num_hidden_layers
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(1, model.config.vocab_size, (2, 150), generator=gen)
    keep = torch.ones_like(ids)
    keep[1, :11] = 0  # left padding in row 1
    graph = mg.load_graph("streaming_llm", overrides={"sink_size": 4, "window_size": 20})
    results: dict[str, dict] = {}
    for mode in ("simulate", "sparse"):
        out = results.setdefault(mode, {})
        options = {"prefill": "flex"} if mode == "sparse" else {}
        with mg.inject(model, graph, mode=mode, protocol="sparse", **options) as h, torch.no_grad():
            if mode == "sparse":
                assert h.layers[0].prefill.path == "flex"
            out["plain"] = model(input_ids=ids).logits
            out["padded"] = model(input_ids=ids, attention_mask=keep).logits
            cache = DynamicCache(config=model.config)
            model(input_ids=ids[:, :100], cache=cache)
            out["chunk"] = model(input_ids=ids[:, 100:], cache=cache).logits
            out["tokens"] = model.generate(ids, attention_mask=keep, max_new_tokens=4, do_sample=False)
    # 4 prompts (plain, padded, cached part, the padded generate's prompt) and one chunk after cached keys
    assert calls == [150] * layers * 2 + [100] * layers + [50] * layers + [150] * layers
    for key in ("plain", "padded", "chunk"):
        want = results["simulate"][key]
        assert (results["sparse"][key] - want).norm() / want.norm() < 1e-4, key
    assert torch.equal(results["sparse"]["tokens"], results["simulate"]["tokens"])
