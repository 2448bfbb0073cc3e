"""Adversarial inputs that must never give silently wrong numbers (docs/guarantees.md, "Numbers").

Samplers draw per layer; estimator state follows a sliding-window cache as it rolls; NaN and
inf inputs propagate as in SDPA; integer tensors are refused; calibration files are checked
against the model they are used with. Statistical assertions state the probability that they
fail for a correct implementation.
"""

from __future__ import annotations

import math

import pytest
import torch

import maskgraph as mg


def qkv(b, hq, hkv, q, k, d, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, hq, q, d, generator=g) * scale,
        torch.randn(b, hkv, k, d, generator=g),
        torch.randn(b, hkv, k, d, generator=g),
    )


def ref_attention(queries, keys, values, keep=None, additive=None):
    """Float64 softmax attention with the G-fold key expansion done plainly.

    keep (B|1, Hq|1, Q, K) bool keys attended (all when None); additive mask likewise. The
    values of keys a row does not attend take no part in its sum (not even as 0 · NaN)."""
    g = queries.shape[1] // keys.shape[1]
    k = keys.double().repeat_interleave(g, dim=1)
    v = values.double().repeat_interleave(g, dim=1)
    s = torch.einsum("bhqd,bhkd->bhqk", queries.double(), k) * queries.shape[-1] ** -0.5
    if additive is not None:
        s = s + additive.double()
    if keep is not None:
        s = s.masked_fill(~keep, float("-inf"))
    w = torch.softmax(s, dim=-1)
    terms = w.unsqueeze(-1) * v.unsqueeze(2)  # (B, Hq, Q, K, D)
    attended = s > float("-inf")
    return torch.where(attended.unsqueeze(-1) | s.isnan().unsqueeze(-1), terms, 0.0).sum(-2)


# ----- samplers draw per layer ----------------------------------------------------------------
SAMPLERS = {
    "random_sample": {"sampling_rate": 0.5, "seed": 11},
    # a loose bound keeps the probability at the base rate, well below 1
    "vattention_sample": {"base_rate_sampling": 0.3, "epsilon": 0.9, "delta": 0.5, "seed": 11},
}


def _sampler(op: str):
    node = {"name": "s", "op": op, "params": SAMPLERS[op]}
    return mg.compile({"graph": op, "nodes": [node], "output": "s"})


def _agree_probability(p: torch.Tensor) -> float:
    """Probability that two independent draws with inclusion probabilities ``p`` agree on every
    key: Π_j (1 − 2·p_j·(1 − p_j)), in float64 logs."""
    p = p.double()
    return math.exp(float(torch.log1p(-2 * p * (1 - p)).sum()))


@pytest.mark.parametrize("op", list(SAMPLERS))
def test_samplers_draw_a_different_mask_on_each_layer(op):
    attn = _sampler(op)
    q, k, v = qkv(2, 4, 2, 3, 200, 16, scale=0.1)
    masks = [attn.mask(q, k, v, layer_idx=layer) for layer in (0, 1, 7)]
    for layer, m in zip((0, 1, 7), masks):
        # same layer, same seed: the same draw, whether or not a State is passed
        assert torch.equal(attn.mask(q, k, v, layer_idx=layer, state=mg.State()), m)
    # both samplers draw every key of a row with one probability: the row's largest value
    rate = masks[0].amax(dim=-1, keepdim=True).expand_as(masks[0]).double()
    assert 0 < float(rate.min()) and float(rate.max()) < 1
    # independent layers agree on every key with the probability computed from the mask's own
    # inclusion probabilities; it is below 1e-30 here, the chance of a false failure
    assert _agree_probability(rate) < 1e-30
    for other in masks[1:]:
        assert not torch.equal(other, masks[0])
        # keep decisions of two independent draws at rate r agree with probability
        # a = r² + (1 − r)²; the agreement count's sd is sqrt(Σ a(1 − a)): a 6-sd band fails
        # with probability < 1e-8
        same = ((other > 0) == (masks[0] > 0)).double()
        a = rate * rate + (1 - rate) * (1 - rate)
        assert abs(float(same.sum() - a.sum())) < 6 * math.sqrt(float((a * (1 - a)).sum()))


# ----- estimator state on a sliding-window cache ----------------------------------------------
PAGE, PAGES_KEPT = 4, 2
QUEST_ONLY = {
    "graph": "quest_only",
    "nodes": [
        {"name": "bounds", "op": "quest", "params": {"page_size": PAGE}},
        {
            "name": "heavy",
            "op": "topk_pages",
            "inputs": {"scores": "bounds"},
            "params": {"k": PAGE * PAGES_KEPT, "page_size": PAGE},
        },
    ],
    "output": "heavy",
}


def ref_quest(queries, keys, values):
    """Float64 Quest over the keys as given (causal: query i sits at K − Q + i): pages of PAGE
    keys bounded by their channel minima and maxima, the PAGES_KEPT best pages with an allowed
    key attended (their allowed keys), loops over every row."""
    b, hq, nq, d = queries.shape
    hkv, nk = keys.shape[1], keys.shape[2]
    out = torch.zeros(b, hq, nq, d, dtype=torch.float64)
    scaling = d**-0.5
    for bi in range(b):
        for h in range(hq):
            k, v = keys[bi, h // (hq // hkv)].double(), values[bi, h // (hq // hkv)].double()
            for i in range(nq):
                q, last = queries[bi, h, i].double(), nk - nq + i
                bounds = []
                for start in range(0, last + 1, PAGE):
                    page = k[start : start + PAGE]
                    lo, hi = page.amin(0), page.amax(0)
                    bounds.append((float(torch.maximum(q * lo, q * hi).sum()), start))
                best = sorted(bounds, key=lambda t: (-t[0], t[1]))[:PAGES_KEPT]
                keep = [j for _, s in best for j in range(s, min(s + PAGE, last + 1))]
                w = torch.softmax(k[keep] @ q * scaling, 0)
                out[bi, h, i] = w @ v[keep]
    return out


def _causal_mask(nq: int, nk: int) -> torch.Tensor:
    i = torch.arange(nq).view(-1, 1) + nk - nq
    return (torch.arange(nk).view(1, -1) <= i).view(1, 1, nq, nk)


@pytest.mark.parametrize("mode", ["simulate", "sparse"])
def test_state_follows_a_rolling_sliding_window_cache(mode):
    """Keys from transformers' sliding-window cache layer (window 16): a prompt, decode steps
    (the key count stays 16 while the keys shift) and a chunk of 3 queries; each call with a
    State equals the same call without one and a float64 Quest reference."""
    from transformers.cache_utils import DynamicSlidingWindowLayer

    attn = mg.compile(QUEST_ONLY, mode=mode)
    layer, state = DynamicSlidingWindowLayer(sliding_window=16), mg.State()
    g = torch.Generator().manual_seed(3)
    for step, nq in enumerate([18, 1, 1, 1, 3, 1]):
        q = torch.randn(1, 4, nq, 8, generator=g)
        k, v = layer.update(torch.randn(1, 2, nq, 8, generator=g), torch.randn(1, 2, nq, 8, generator=g))
        am = _causal_mask(nq, k.shape[2]) if nq > 1 else None
        dropped = layer.get_seq_length() - k.shape[2]
        out = attn(q, k, v, am, state=state, layer_idx=0, kv_offset=dropped)
        assert torch.equal(out, attn(q, k, v, am)), f"step {step}"
        torch.testing.assert_close(out.double(), ref_quest(q, k, v), atol=1e-5, rtol=1e-5)


KEY_CACHE_OVERRIDES = {
    "pqcache": {"heavy_size": 4, "pq_bits": 2, "kmeans_iter": 3},
    "socket": {"heavy_size": 4},
}


@pytest.mark.parametrize("graph", list(KEY_CACHE_OVERRIDES))
def test_key_caches_follow_a_rolling_sliding_window_cache(graph):
    """PQ codes and SOCKET's key hashes: with a State, the same as without one while a
    sliding-window cache rolls."""
    from transformers.cache_utils import DynamicSlidingWindowLayer

    overrides = {"sink_size": 1, "window_size": 1, **KEY_CACHE_OVERRIDES[graph]}
    attn = mg.compile(graph, overrides=overrides)
    layer, state = DynamicSlidingWindowLayer(sliding_window=16), mg.State()
    g = torch.Generator().manual_seed(4)
    for step, nq in enumerate([18, 1, 1, 1, 3, 1]):
        q = torch.randn(1, 4, nq, 8, generator=g)
        k, v = layer.update(torch.randn(1, 2, nq, 8, generator=g), torch.randn(1, 2, nq, 8, generator=g))
        am = _causal_mask(nq, k.shape[2]) if nq > 1 else None
        dropped = layer.get_seq_length() - k.shape[2]
        out = attn(q, k, v, am, state=state, layer_idx=0, kv_offset=dropped)
        assert torch.equal(out, attn(q, k, v, am)), f"step {step}"


def test_state_forgets_a_layer_when_its_keys_move():
    state = mg.State()
    state.slot(0, "a")["x"] = 1
    state.slot(1, "a")["x"] = 1
    assert not state.align(0, None) and not state.align(0, 0)
    assert state.align(0, 5)
    assert state.keys() == [(1, "a")]
    state.slot(0, "a")["x"] = 2
    assert not state.align(0, None) and not state.align(0, 5)
    assert state.slot(0, "a") == {"x": 2}


class _StatelessCheck:
    """Observer: each graph call's output equals the same call made without State."""

    def __init__(self):
        self.calls = 0

    def observe(self, layer_idx, queries, keys, values, attention_mask, scaling, out, attn):
        fresh = attn(queries, keys, values, attention_mask, scaling, layer_idx=layer_idx)
        torch.testing.assert_close(out, fresh, atol=1e-6, rtol=1e-6)
        self.calls += 1


@pytest.mark.parametrize("mode", ["simulate", "sparse"])
def test_gemma3_sliding_layer_state_equals_stateless_calls(mode):
    """Tiny Gemma3 (layer 0 slides over 6 keys): every graph call of a generation with the
    sparse protocol equals the stateless call, while the sliding layer's cache rolls."""
    from maskgraph.hf import tiny_model

    model = tiny_model("gemma3")
    ids = torch.randint(0, model.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(5))
    check = _StatelessCheck()
    overrides = {"sink_size": 1, "window_size": 1, "heavy_size": 2, "page_size": 2}
    with (
        torch.no_grad(),
        mg.inject(model, "quest", mode=mode, protocol="sparse", overrides=overrides, observer=check),
    ):
        model.generate(ids, max_new_tokens=8, do_sample=False)
    assert check.calls == 2 * 8  # two layers, a prompt and seven decode steps


# ----- NaN and inf propagate as in SDPA, in both modes -----------------------------------------
SINK, WINDOW = 2, 4


def _streaming_keep(nq: int, nk: int) -> torch.Tensor:
    """(1, 1, Q, K) bool: the first SINK keys and the WINDOW keys up to each query's position."""
    t = torch.arange(nq).view(-1, 1) + nk - nq
    j = torch.arange(nk).view(1, -1)
    return ((j < SINK) | ((j <= t) & (j > t - WINDOW))).view(1, 1, nq, nk)


def _poison(kind: str, q, k, v):
    """Copies of (q, k, v) with non-finite entries: NaN in query row (b0, h1, q2), or +inf in
    key 21 of (b0, KV head 0), which every query attends through the window, and NaN in key 9
    of (b0, KV head 1), which streaming_llm's queries do not attend."""
    q, k, v = q.clone(), k.clone(), v.clone()
    if kind == "nan_query":
        q[0, 1, 2, 3] = float("nan")
    else:
        k[0, 0, 21, 0] = float("inf")
        k[0, 1, 9, :] = float("nan")
    return q, k, v


@pytest.mark.parametrize("kind", ["nan_query", "inf_key"])
@pytest.mark.parametrize("graph", ["dense", "streaming_llm"])
def test_non_finite_inputs_propagate_as_in_sdpa(graph, kind):
    """A NaN query, or an inf key or NaN value that an attended key brings, gives NaN in the rows
    that attend it (never an all-zero row counted as empty), as float64 softmax attention does,
    in simulate and sparse mode alike; a key the graph does not attend changes nothing; a row
    that may attend no key (the attention mask forbids all) is zero and counted."""
    q, k, v = _poison(kind, *qkv(2, 4, 2, 3, 24, 8, seed=7))
    am = torch.zeros(2, 1, 3, 24)
    am[1, :, 0] = float("-inf")  # query 0 of the second sequence may attend nothing
    overrides = {"sink_size": SINK, "window_size": WINDOW} if graph == "streaming_llm" else {}
    keep = _streaming_keep(3, 24) if graph == "streaming_llm" else None
    ref = ref_attention(q, k, v, keep=keep, additive=am)
    ref[1, :, 0] = 0.0  # no attended key: zeros by definition
    rows = ref.isnan().any(-1)
    assert bool(rows[0, 1, 2]) == (kind == "nan_query")
    assert bool(rows[0, 0].any()) == (kind == "inf_key")  # the inf key reaches KV head 0
    # the NaN key of KV head 1 reaches its query heads 2 and 3 only where key 9 is attended
    assert bool(rows[0, 2:].any()) == (kind == "inf_key" and graph == "dense")
    for mode in ("simulate", "sparse"):
        attn = mg.compile(graph, mode=mode, overrides=overrides)
        out = attn(q, k, v, am)
        assert torch.equal(out.isnan(), ref.isnan()), mode
        torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5, equal_nan=True)
        if mode == "simulate":
            assert int(attn.empty_rows) == 4  # the forbidden row in 4 heads; NaN rows are not empty


# ----- dtypes: what SDPA refuses is refused ---------------------------------------------------
@pytest.mark.parametrize("mode", ["simulate", "sparse"])
def test_bool_masks_attend_where_true_and_integer_masks_are_refused(mode):
    """A bool mask keeps the keys where it is True (as SDPA), the same as the additive mask
    0 / −inf, against float64; an integer mask of the same 0/1 values is refused by name."""
    q, k, v = qkv(2, 4, 2, 3, 20, 8, seed=2)
    allowed = torch.rand(2, 1, 3, 20, generator=torch.Generator().manual_seed(9)) < 0.6
    allowed[..., 0] = True
    attn = mg.compile("dense", mode=mode)
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))
    ref = ref_attention(q, k, v, keep=allowed)
    torch.testing.assert_close(attn(q, k, v, allowed).double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn(q, k, v, additive).double(), ref, atol=1e-5, rtol=1e-5)
    for dtype in (torch.int64, torch.int32, torch.uint8, torch.int8):
        with pytest.raises(mg.DTypeError, match=rf"attention_mask has dtype {dtype}; valid: torch.bool"):
            attn(q, k, v, allowed.to(dtype))
        with pytest.raises(TypeError):  # as SDPA's error is a TypeError-like RuntimeError
            attn.mask(q, k, v, allowed.to(dtype))


@pytest.mark.parametrize("mode", ["simulate", "sparse"])
@pytest.mark.parametrize("name", ["queries", "keys", "values"])
def test_integer_queries_keys_values_are_refused(name, mode):
    q, k, v = qkv(1, 4, 2, 2, 12, 8)
    tensors = {"queries": q, "keys": k, "values": v}
    attn = mg.compile("dense", mode=mode)
    for dtype in (torch.int64, torch.int32, torch.bool):
        bad = {**tensors, name: (tensors[name] * 4).to(dtype)}
        with pytest.raises(mg.DTypeError, match=rf"{name} have dtype {dtype}; valid: torch.float16"):
            attn(bad["queries"], bad["keys"], bad["values"])
    with pytest.raises(mg.DTypeError, match="sinks have dtype torch.int64"):
        attn(q, k, v, sinks=torch.zeros(4, dtype=torch.int64))


# ----- calibration files: made for this model, and finite --------------------------------------
def _ds_file(path, model, layers=2, hkv=2, d=16, name="tiny-llama"):
    """A Double Sparsity channel file recording ``model``'s signature (None: no signature)."""
    import json

    from maskgraph.ops.zoo.double_sparsity import save_channels

    g = torch.Generator().manual_seed(0)
    channels = torch.stack([torch.randperm(d, generator=g) for _ in range(layers * hkv)]).view(layers, hkv, d)
    meta = {"model": name}
    if model is not None:
        c = model.config
        signature = {
            "model_type": c.model_type,
            "num_hidden_layers": c.num_hidden_layers,
            "num_attention_heads": c.num_attention_heads,
            "num_key_value_heads": c.num_key_value_heads,
            "head_dim": c.head_dim,
            "hidden_size": c.hidden_size,
            "vocab_size": c.vocab_size,
        }
        meta["model_signature"] = json.dumps(signature)
    save_channels(path, channels, meta)
    return str(path)


def test_calibration_file_for_another_model_is_refused_at_inject(tmp_path):
    from maskgraph.hf import tiny_model

    llama, qwen = tiny_model("llama"), tiny_model("qwen2")
    made_for_llama = _ds_file(tmp_path / "llama.safetensors", llama)
    with mg.inject(llama, "double_sparsity", overrides={"ds_channels": made_for_llama}):
        pass  # the model it was made for
    # same tensor shapes (2 layers, 2 KV heads, head dim 16): only the signature tells them apart
    with pytest.raises(mg.CalibrationError, match=r"made for model 'tiny-llama', not for the model in use"):
        mg.inject(qwen, "double_sparsity", overrides={"ds_channels": made_for_llama})
    assert not str(qwen.config._attn_implementation).startswith("maskgraph")  # nothing injected
    # a file without a signature is checked by its shapes: 3 layers for a 2-layer model
    three_layers = _ds_file(tmp_path / "old.safetensors", None, layers=3, name="other")
    with pytest.raises(mg.CalibrationError, match=r"'other'.*num_hidden_layers 3 \(the model has 2\)"):
        mg.inject(llama, "double_sparsity", overrides={"ds_channels": three_layers})


def test_hash_weights_for_another_model_or_not_finite_are_refused(tmp_path):
    from safetensors.torch import save_file

    from maskgraph.hf import tiny_model
    from maskgraph.ops.zoo.hashattention import random_hash_weights, save_hash_weights

    llama = tiny_model("llama")
    wrong_heads = tmp_path / "wrong.safetensors"
    save_hash_weights(wrong_heads, random_hash_weights(2, 8, 2, 16, bits=32, hidden=8), {"model": "big"})
    with pytest.raises(
        mg.CalibrationError, match=r"made for model 'big'.*num_attention_heads 8 \(the model has 4\)"
    ):
        mg.inject(llama, "hashattention", overrides={"hat_weights": str(wrong_heads)})
    nan = tmp_path / "nan.safetensors"
    tensors = {
        f"layer{layer}.{name}": torch.full_like(t, float("nan"))
        for layer, w in random_hash_weights(2, 4, 2, 16, bits=32, hidden=8).items()
        for name, t in w.items()
    }
    save_file(tensors, str(nan), metadata={"kind": "hashattention", "hat_bits": "32", "hidden": "8"})
    with pytest.raises(mg.CalibrationError, match=r"non-finite values \(NaN or inf\)"):
        mg.inject(llama, "hashattention", overrides={"hat_weights": str(nan)})
    q, k, v = qkv(1, 4, 2, 1, 20, 16)
    attn = mg.compile("hashattention", overrides={"hat_weights": str(nan), "sink_size": 1, "window_size": 1})
    with pytest.raises(mg.CalibrationError, match="non-finite"):
        attn(q, k, v)
