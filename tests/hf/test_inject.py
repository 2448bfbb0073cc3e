"""HuggingFace injection on tiny random Llama, Qwen2 and Gemma3 models (2 layers, 4 query / 2 KV heads).

References are the models' own SDPA attention (transformers), run without injection.
"""

from __future__ import annotations

import pytest
import torch

import maskgraph as mg
from maskgraph.errors import CalibrationError
from maskgraph.hf import ContextSession, tiny_model
from maskgraph.ir import LayerRules

ARCHS = ("llama", "qwen2", "gemma3")
TOL = 1e-4
LOCAL_ONLY = {
    "graph": "local_only",
    "nodes": [{"name": "w", "op": "local", "params": {"size": 5}}],
    "output": "w",
}


def _ids(n: int, seed: int = 1, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 256, (batch, n), generator=g)


def _logits(model, ids, **kw) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, **kw).logits


def _gen_logits(model, ids, n=4, **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy continuation: (sequences (B, L+n), per-step logits (n, B, V))."""
    with torch.no_grad():
        out = model.generate(
            ids,
            max_new_tokens=n,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=0,
            **kw,
        )
    return out.sequences, torch.stack(out.logits)


class Recorder:
    """Observer keeping (layer, Q, K, attention_mask) of every observed call."""

    def __init__(self):
        self.calls = []

    def observe(self, layer_idx, queries, keys, values, attention_mask, scaling, out, attn):
        assert out.shape == queries.shape
        self.calls.append((layer_idx, queries.shape[2], keys.shape[2], attention_mask))


@pytest.mark.parametrize("arch", ARCHS)
def test_dense_graph_reproduces_sdpa_prefill_and_decode(arch):
    model = tiny_model(arch)
    ids = _ids(23)  # longer than Gemma3's sliding window (6), not a multiple of anything
    ref_seq, ref_steps = _gen_logits(model, ids)
    ref = _logits(model, ids)
    with mg.inject(model, "dense", protocol="sparse") as h:
        out = _logits(model, ids)
        seq, steps = _gen_logits(model, ids)
        assert h.dense_calls == 0 and h.calls == 2 * (
            1 + 4
        )  # 2 layers x (one forward + prefill and 3 decode steps)
    assert (out - ref).abs().max().item() <= TOL
    assert torch.equal(seq, ref_seq)
    assert (steps - ref_steps).abs().max().item() <= TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_streaming_llm_wide_window_equals_dense_narrow_differs(arch):
    model = tiny_model(arch)
    ids = _ids(20)
    ref = _logits(model, ids)
    with mg.inject(model, "streaming_llm", protocol="sparse", overrides={"window_size": 64}):
        wide = _logits(model, ids)
    with mg.inject(model, "streaming_llm", protocol="sparse", overrides={"sink_size": 1, "window_size": 3}):
        narrow = _logits(model, ids)
    assert (wide - ref).abs().max().item() <= TOL
    # the first 4 queries see at most sink + 3 keys = all their keys; later ones lose keys
    assert (narrow[:, :4] - ref[:, :4]).abs().max().item() <= TOL
    assert (narrow[:, 4:] - ref[:, 4:]).abs().max().item() > 1e-2


@pytest.mark.parametrize("arch", ARCHS)
def test_remove_restores_bitwise_and_unregisters(arch):
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    model = tiny_model(arch)
    ids = _ids(12)
    before = _logits(model, ids)
    h = mg.inject(model, "streaming_llm", protocol="sparse", overrides={"sink_size": 1, "window_size": 2})
    assert model.config._attn_implementation == h.name
    assert h.name in AttentionInterface._global_mapping and h.name in AttentionMaskInterface._global_mapping
    assert not torch.equal(_logits(model, ids), before)
    h.remove()
    h.remove()  # idempotent
    assert model.config._attn_implementation == "sdpa"
    assert h.name not in AttentionInterface._global_mapping
    assert h.name not in AttentionMaskInterface._global_mapping
    assert torch.equal(_logits(model, ids), before)


def _calibration_overrides(name: str, tmp_path) -> dict:
    """Random calibration files for graphs that need them (sized for the tiny models)."""
    if name == "hashattention":
        from maskgraph.ops.zoo.hashattention import random_hash_weights, save_hash_weights

        path = tmp_path / "hat.safetensors"
        save_hash_weights(path, random_hash_weights(2, 4, 2, 16, bits=32, hidden=8))
        return {"hat_weights": str(path)}
    if name == "double_sparsity":
        from maskgraph.ops.zoo.double_sparsity import save_channels

        g = torch.Generator().manual_seed(0)
        channels = torch.stack([torch.randperm(16, generator=g) for _ in range(4)]).view(2, 2, 16)
        path = tmp_path / "ds.safetensors"
        save_channels(path, channels)
        return {"ds_channels": str(path)}
    return {}


@pytest.mark.parametrize("name", sorted(mg.shipped_graphs()))
def test_generation_runs_with_every_shipped_graph(name, tmp_path):
    model = tiny_model("llama")
    ids = _ids(40)
    overrides = {"sink_size": 2, "window_size": 4}
    graph = mg.load_graph(name)
    overrides = {k: v for k, v in overrides.items() if k in graph.params}
    overrides.update(_calibration_overrides(name, tmp_path))
    try:
        h = mg.inject(model, name, protocol="sparse", overrides=overrides)
    except CalibrationError as exc:  # pragma: no cover - only for graphs added without a fixture
        pytest.skip(f"{name} needs calibration data this test does not build: {exc}")
    with h:
        torch.manual_seed(0)
        seq, steps = _gen_logits(model, ids, n=3)
        assert h.calls == 2 * 3
        stateful = any(mg.get_op(n.op).prepare is not None for n in graph.nodes.values())
        if stateful:  # per-layer operator state of this request
            assert {layer for layer, _ in h.state.keys()} == {0, 1}
    assert seq.shape == (1, 43)
    assert torch.isfinite(steps).all()


@pytest.mark.parametrize("graph", ["dense", "local"])
def test_batch_with_left_padding_matches_single_runs(graph):
    model = tiny_model("qwen2")
    g = LOCAL_ONLY if graph == "local" else "dense"
    long, short = _ids(14, seed=2), _ids(9, seed=3)
    pad = long.shape[1] - short.shape[1]
    batch = torch.cat([long, torch.cat([torch.zeros(1, pad, dtype=torch.long), short], 1)])
    mask = torch.ones_like(batch)
    mask[1, :pad] = 0
    with mg.inject(model, g, protocol="sparse"):
        seq_b, steps_b = _gen_logits(model, batch, attention_mask=mask)
        seq_l, steps_l = _gen_logits(model, long)
        seq_s, steps_s = _gen_logits(model, short)
    assert torch.equal(seq_b[0], seq_l[0]) and torch.equal(seq_b[1, pad:], seq_s[0])
    assert (steps_b[:, 0] - steps_l[:, 0]).abs().max().item() <= TOL
    assert (steps_b[:, 1] - steps_s[:, 0]).abs().max().item() <= TOL


def test_two_injected_models_do_not_interfere():
    a, b = tiny_model("llama", seed=0), tiny_model("llama", seed=5)
    ids = _ids(16)
    ref_a = _logits(a, ids)
    with mg.inject(b, "streaming_llm", protocol="sparse", overrides={"sink_size": 1, "window_size": 2}):
        ref_b = _logits(b, ids)
    with mg.inject(a, "dense", protocol="sparse") as ha:
        with mg.inject(
            b, "streaming_llm", protocol="sparse", overrides={"sink_size": 1, "window_size": 2}
        ) as hb:
            assert ha.name != hb.name
            out_a, out_b, out_a2 = _logits(a, ids), _logits(b, ids), _logits(a, ids)
    assert (out_a - ref_a).abs().max().item() <= TOL and torch.equal(out_a, out_a2)
    assert torch.equal(out_b, ref_b)


def test_layer_selection_keeps_listed_layers_dense():
    model = tiny_model("llama")
    ids = _ids(16)
    ref = _logits(model, ids)
    narrow = mg.load_graph("streaming_llm", overrides={"sink_size": 1, "window_size": 2})
    narrow.layers = LayerRules(dense=[0])
    rec = Recorder()
    with mg.inject(model, narrow, protocol="sparse", observer=rec) as h:
        assert h.layers[0] is None and h.layers[1] is not None
        partly = _logits(model, ids)
        assert h.dense_calls == 1 and h.calls == 1
    assert [c[0] for c in rec.calls] == [1]
    narrow.layers = LayerRules(dense=[0, 1])
    with mg.inject(model, narrow, protocol="sparse") as h:
        all_dense = _logits(model, ids)
        assert h.calls == 0
    with mg.inject(model, "streaming_llm", protocol="sparse", overrides={"sink_size": 1, "window_size": 2}):
        all_narrow = _logits(model, ids)
    assert (all_dense - ref).abs().max().item() <= TOL
    assert (partly - ref).abs().max().item() > 1e-2
    assert (partly - all_narrow).abs().max().item() > 1e-3


def test_layer_overrides_compile_one_function_per_distinct_graph():
    g = mg.load_graph("streaming_llm")
    g.layers = LayerRules(overrides={1: {"window_size": 3}})
    model = tiny_model("llama")
    with mg.inject(model, g) as h:
        assert h.layers[0] is not h.layers[1]
        assert h.layers[1].graph.params["window_size"] == 3


def test_gemma3_sliding_layer_mask_keeps_its_window():
    model = tiny_model("gemma3")  # layer 0 slides (window 6), layer 1 is global
    rec = Recorder()
    with mg.inject(model, "dense", protocol="sparse", observer=rec):
        _logits(model, _ids(15))
    masks = {layer: am for layer, _, _, am in rec.calls}
    sliding, full = masks[0][0, 0], masks[1][0, 0]
    assert sliding.dtype == torch.bool and sliding.shape == (15, 15)
    assert sliding.sum(-1).tolist() == [min(i + 1, 6) for i in range(15)]
    assert full.sum(-1).tolist() == [i + 1 for i in range(15)]


def test_dense_prefill_protocol_prefill_dense_then_graph_and_fresh_state_per_request():
    model = tiny_model("llama")
    ids = _ids(18)
    rec = Recorder()
    narrow = {"sink_size": 1, "window_size": 2}
    with mg.inject(model, "streaming_llm", overrides=narrow, observer=rec) as h:
        seq, steps = _gen_logits(model, ids, n=4)
        assert h.dense_calls == 2 and h.calls == 2 * 3 and h.tracker.requests == 1
        assert {q for _, q, _, _ in rec.calls} == {1}
        first_state = h.state
        _gen_logits(model, ids, n=2)
        assert h.tracker.requests == 2 and h.state is not first_state
        with h.dense():
            seq_d, steps_d = _gen_logits(model, ids, n=4)
    ref_seq, ref_steps = _gen_logits(model, ids, n=4)
    # the first generated token comes from the dense prefill, later ones from the graph
    assert (steps[0] - ref_steps[0]).abs().max().item() <= TOL
    assert (steps[1:] - ref_steps[1:]).abs().max().item() > 1e-3
    assert (steps_d - ref_steps).abs().max().item() <= TOL


def test_sampling_generation_runs():
    model = tiny_model("gemma3")
    with mg.inject(model, "oracle_topk", overrides={"sink_size": 1, "window_size": 2, "heavy_size": 2}) as h:
        torch.manual_seed(0)
        with torch.no_grad():
            out = model.generate(_ids(12), max_new_tokens=5, do_sample=True, top_k=20, pad_token_id=0)
        assert h.calls == 2 * 4
    assert out.shape == (1, 17)


def test_context_session_routes_question_through_graph_and_isolates_questions():
    model = tiny_model("llama")
    context, question = _ids(20, seed=4), _ids(5, seed=5)
    rec = Recorder()
    with ContextSession(
        model, None, "streaming_llm", overrides={"sink_size": 1, "window_size": 3}, observer=rec
    ) as s:
        assert s.prefill(context) == 20
        assert s.handle.calls == 0 and s.handle.dense_calls == 2
        a1 = s.ask(question, max_new_tokens=4)
        assert [q for _, q, _, _ in rec.calls][:2] == [5, 5]  # the question went through the graph
        a2 = s.ask(question, max_new_tokens=4)
        dense = s.ask(question, max_new_tokens=4, dense=True)
    assert a1 == a2
    with torch.no_grad():
        plain = model.generate(torch.cat([context, question], 1), max_new_tokens=4, do_sample=False)
    assert dense == " ".join(str(int(t)) for t in plain[0, 25:])
    assert model.config._attn_implementation == "sdpa"


def test_sinks_of_the_module_reach_the_graph():
    model = tiny_model("llama")
    ids = _ids(10)
    ref = _logits(model, ids)
    for layer in model.model.layers:
        layer.self_attn.sinks = torch.full((4,), -1e4)
    with mg.inject(model, "dense", protocol="sparse"):
        silent = _logits(model, ids)
    for layer in model.model.layers:
        layer.self_attn.sinks = torch.full((4,), 3.0)
    with mg.inject(model, "dense", protocol="sparse"):
        loud = _logits(model, ids)
    assert (silent - ref).abs().max().item() <= TOL
    assert (loud - ref).abs().max().item() > 1e-2


def test_inject_rejects_bad_protocol_and_non_models():
    model = tiny_model("llama")
    with pytest.raises(mg.MaskgraphError, match="protocol"):
        mg.inject(model, "dense", protocol="nope")
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(mg.MaskgraphError, match="PreTrainedModel"):
        mg.inject(object(), "dense")


def test_bf16_model_dense_graph_close_to_sdpa():
    model = tiny_model("qwen2", dtype=torch.bfloat16)
    ids = _ids(17)
    ref = _logits(model, ids).float()
    with mg.inject(model, "dense", protocol="sparse"):
        out = _logits(model, ids)
    assert out.dtype == torch.bfloat16
    # bf16 rounding of hidden states between layers: a few bf16 ulps of the logits' scale
    assert (out.float() - ref).abs().max().item() <= 0.02 * ref.abs().max().item()


def test_sparse_mode_is_passed_to_compile_and_matches_simulate():
    model = tiny_model("llama")
    ids = _ids(21)
    narrow = {"sink_size": 2, "window_size": 4}
    with mg.inject(model, "streaming_llm", protocol="sparse", overrides=narrow) as h:
        simulated = _logits(model, ids)
        assert h.layers[0].mode == "simulate"
    with mg.inject(model, "streaming_llm", mode="sparse", protocol="sparse", overrides=narrow) as h:
        sparse = _logits(model, ids)
        assert h.layers[0].mode == "sparse"
    assert (sparse - simulated).abs().max().item() <= TOL


@pytest.mark.slow
def test_inductor_backend_matches_sdpa_through_prefill_and_decode():
    model = tiny_model("llama")
    ids = _ids(19)
    ref_seq, ref_steps = _gen_logits(model, ids, n=3)
    with mg.inject(model, "dense", protocol="sparse", backend="inductor"):
        seq, steps = _gen_logits(model, ids, n=3)
    assert torch.equal(seq, ref_seq)
    assert (steps - ref_steps).abs().max().item() <= TOL


def test_nested_injections_on_one_model_unwind_in_order():
    model = tiny_model("llama")
    ids = _ids(12)
    before = _logits(model, ids)
    outer = mg.inject(model, "streaming_llm", protocol="sparse", overrides={"sink_size": 1, "window_size": 2})
    inner = mg.inject(model, "dense", protocol="sparse")
    assert (_logits(model, ids) - before).abs().max().item() <= TOL  # the latest injection wins
    with pytest.raises(mg.MaskgraphError, match="remove that one first"):
        outer.remove()
    inner.remove()
    assert model.config._attn_implementation == outer.name
    outer.remove()
    assert torch.equal(_logits(model, ids), before)


@pytest.mark.parametrize("mode", ["simulate", "sparse"])
@pytest.mark.parametrize("arch", ARCHS)
def test_static_cache_generation_equals_dynamic_cache(arch, mode):
    """transformers' static caches hand attention their whole preallocated buffer (keys past
    the tokens seen are zeros); the graphs take key j as position j. Simulate mode gets the
    buffer trimmed to the tokens; sparse mode reads a full-attention layer's whole buffer with
    its token count on the device (capturable), a sliding layer trimmed. Gemma3's sliding layer
    (window 6) wraps its static ring well within 12 tokens."""
    model = tiny_model(arch)
    ids = _ids(12)
    narrow = {"sink_size": 2, "window_size": 4}
    recorder = Recorder()
    with mg.inject(
        model, "streaming_llm", mode=mode, protocol="sparse", overrides=narrow, observer=recorder
    ) as handle:
        dynamic, dynamic_logits = _gen_logits(model, ids, n=5)
        seen = [k for _, _, k, _ in recorder.calls]
        recorder.calls.clear()
        static, static_logits = _gen_logits(model, ids, n=5, cache_implementation="static")
    assert torch.equal(static, dynamic)
    assert (static_logits - dynamic_logits).abs().max().item() <= TOL
    got = [k for _, _, k, _ in recorder.calls]
    if mode == "simulate":
        assert got == seen and handle.static_calls == 0  # the graph saw the same keys
    else:
        buffer = max(got)
        whole = [k == buffer for k in got]
        assert handle.static_calls == sum(whole) > 0
        assert all(k in (want, buffer) for k, want in zip(got, seen))
        assert all(whole) or arch == "gemma3"  # Gemma3's sliding layer is trimmed


def test_static_layer_without_a_token_count_is_measured_by_the_mask():
    """Older transformers' static layers keep no token count: the last key the boolean mask
    lets a query attend ends the tokens; without a boolean mask the injection refuses."""
    from types import SimpleNamespace

    from maskgraph.hf.inject import _valid_length

    cache = SimpleNamespace(layers=[SimpleNamespace(max_cache_len=10)])
    mask = torch.zeros(1, 1, 2, 10, dtype=torch.bool)
    mask[0, 0, 0, :6] = True
    mask[0, 0, 1, :7] = True
    assert _valid_length(cache, 0, 10, mask) == 7
    assert _valid_length(SimpleNamespace(layers=[SimpleNamespace()]), 0, 10, None) == 10  # dynamic
    with pytest.raises(mg.NotSupportedError, match="without a token count"):
        _valid_length(cache, 0, 10, None)


def test_a_prompt_on_an_empty_cache_builds_no_quadratic_mask():
    """A causal prompt without padding on an empty cache, dynamic or static, gets no (Q, K) mask
    (16 GiB of booleans at 128K): dense SDPA takes ``is_causal``; padding, a continuation or a
    window still get the full mask."""
    from transformers.masking_utils import causal_mask_function

    from maskgraph.hf.inject import _materialised_mask

    kw = dict(batch_size=1, q_length=6, kv_length=6, q_offset=0, kv_offset=0, device="cpu")
    kw.update(mask_function=causal_mask_function, attention_mask=None)
    assert _materialised_mask(**kw) is None
    assert _materialised_mask(**{**kw, "attention_mask": torch.ones(1, 6, dtype=torch.bool)}) is None
    padded = torch.ones(1, 6, dtype=torch.bool)
    padded[0, 0] = False
    assert _materialised_mask(**{**kw, "attention_mask": padded}).shape == (1, 1, 6, 6)
    # a static buffer longer than the prompt: the queries start at 0, SDPA's top-left causal
    # alignment never reaches the empty rows
    assert _materialised_mask(**{**kw, "kv_length": 9}) is None
    assert _materialised_mask(**{**kw, "kv_length": 9, "q_offset": torch.tensor(0)}) is None
    assert _materialised_mask(**{**kw, "kv_length": 9, "attention_mask": padded}).shape == (1, 1, 6, 9)
    # a continuation (queries after cached tokens)
    assert _materialised_mask(**{**kw, "kv_length": 9, "q_offset": 3}).shape == (1, 1, 6, 9)
    assert _materialised_mask(**{**kw, "kv_length": 9, "q_offset": torch.tensor(3)}).shape == (1, 1, 6, 9)
    assert _materialised_mask(**{**kw, "local_size": 3}).shape == (1, 1, 6, 6)
    assert _materialised_mask(**{**kw, "q_length": 1, "kv_length": 1}).shape == (1, 1, 1, 1)
    # a caller that needs the mask itself (transformers' indexed-attention layers) gets it
    assert _materialised_mask(**{**kw, "allow_is_causal_skip": False}).shape == (1, 1, 6, 6)


def test_an_unpadded_decode_steps_mask_is_noted_and_no_other():
    """One causal query without padding or window: the mask is made (dense layers need it)
    and noted as a decode step's; padding, a window, two queries or a copy are not."""
    from transformers.masking_utils import causal_mask_function

    from maskgraph.hf.inject import _is_decode_mask, _materialised_mask

    kw = dict(batch_size=2, q_length=1, kv_length=7, q_offset=6, kv_offset=0, device="cpu")
    kw.update(mask_function=causal_mask_function, attention_mask=None)
    step = _materialised_mask(**kw)
    assert step.shape == (2, 1, 1, 7) and bool(step.all()) and _is_decode_mask(step)
    assert not _is_decode_mask(step.clone()) and not _is_decode_mask(None)
    assert _is_decode_mask(_materialised_mask(**{**kw, "attention_mask": torch.ones(2, 7, dtype=torch.bool)}))
    padded = torch.ones(2, 7, dtype=torch.bool)
    padded[1, 0] = False
    assert not _is_decode_mask(_materialised_mask(**{**kw, "attention_mask": padded}))
    assert not _is_decode_mask(_materialised_mask(**{**kw, "local_size": 3}))
    assert not _is_decode_mask(_materialised_mask(**{**kw, "q_length": 2, "q_offset": 5}))
    # a static buffer: the query at position 3 of 7 slots; its mask still counts (the graph
    # call's token count drops the slots past it)
    static = _materialised_mask(**{**kw, "q_offset": 3})
    assert static[0, 0, 0].tolist() == [True] * 4 + [False] * 3 and _is_decode_mask(static)


@pytest.mark.parametrize("mode", ["sparse", "simulate"])
@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_graph_layers_run_unpadded_decode_steps_without_a_mask(cache, mode, monkeypatch):
    """Decode steps of an unpadded batch reach the graph without a mask (a static cache's whole
    buffer with its token count in sparse mode, the buffer cut to its tokens in simulate mode),
    with the same tokens and logits as when they are given the mask; an observer still gets
    the mask; a left-padded batch's steps keep theirs."""
    import importlib

    from maskgraph.lower.compiled import CompiledAttention

    inject_module = importlib.import_module("maskgraph.hf.inject")
    given = []
    real_call = CompiledAttention.__call__

    def spy(self, queries, keys, values, attention_mask=None, *args, **kwargs):
        if queries.shape[2] == 1:
            given.append(attention_mask)
        return real_call(self, queries, keys, values, attention_mask, *args, **kwargs)

    monkeypatch.setattr(CompiledAttention, "__call__", spy)
    model = tiny_model("llama")
    ids = _ids(12, batch=2)
    graph, narrow = "quest", {"sink_size": 2, "window_size": 3, "heavy_size": 4, "page_size": 2}
    kw = {} if cache == "dynamic" else {"cache_implementation": "static"}
    runs = {}
    noting = inject_module._is_decode_mask
    for noted in (True, False):  # False: every step given its mask (the reference)
        monkeypatch.setattr(inject_module, "_is_decode_mask", noting if noted else lambda mask: False)
        given.clear()
        recorder = Recorder()
        with mg.inject(model, graph, mode=mode, protocol="sparse", overrides=narrow, observer=recorder):
            runs[noted] = _gen_logits(model, ids, n=4, **kw)
        assert len(given) == 2 * 3  # two layers, three decode steps
        assert all((mask is None) == noted for mask in given)
        assert all(mask is not None for _, q, _, mask in recorder.calls if q == 1)
    assert torch.equal(runs[True][0], runs[False][0])
    assert (runs[True][1] - runs[False][1]).abs().max().item() <= TOL
    monkeypatch.setattr(inject_module, "_is_decode_mask", noting)
    padding = torch.ones_like(ids)
    padding[1, :3] = 0
    given.clear()
    with mg.inject(model, graph, mode=mode, protocol="sparse", overrides=narrow):
        _gen_logits(model, ids, n=3, attention_mask=padding, **kw)
    assert len(given) == 2 * 2 and all(mask is not None for mask in given)


def test_layer_table_collapses_equal_rows_and_says_what_its_columns_mean():
    from maskgraph.hf.layer_stats import LayerStats, _Totals

    stats = LayerStats()
    for i in range(2, 30):
        stats.layers[i] = _Totals(kept=20, allowed=100, err2=(0.01 * i) ** 2, ref2=1.0, calls=18)
    stats.layers[31] = _Totals(kept=20, allowed=100, err2=0.0, ref2=1.0, calls=18)  # after a gap
    stats.layers[32] = _Totals(kept=50, allowed=100, err2=0.0, ref2=1.0, calls=18)
    lines = stats.table().splitlines()
    assert lines[0].split() == ["layers", "density", "rel.", "error", "calls"]
    assert lines[1].split() == ["2–29", "0.200", "0.0200–0.2900", "18"]
    assert lines[2].split() == ["31", "0.200", "0.0000", "18"]
    assert lines[3].split() == ["32", "0.500", "0.0000", "18"]
    assert lines[4].startswith("calls: ") and lines[5].startswith("rel. error: ") and "0.1" in lines[5]
    assert len(stats.table(legend=False).splitlines()) == 4
