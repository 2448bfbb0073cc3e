"""Beam search (``generate(num_beams=N)``) through graphs whose operators keep per-request state.

Between steps beam search reorders the cache's rows: row b continues the sequence row
``beam_idx[b]`` held. The operators' State must follow, so that each row's state describes the
keys of the sequence it holds. Reference: every call of the beam search is replayed apart — each
row's sequence at that step (rebuilt from the tokens fed and the recorded reorders), prefilled
and decoded one token per call on a fresh cache and State, with no reorder at all — and its
logits must be those beam search saw.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import DynamicCache, StaticCache

import maskgraph as mg
from maskgraph.hf.models import tiny_model
from maskgraph.ops.zoo.hashattention import random_hash_weights, save_hash_weights

PROMPT, NEW, BEAMS, BATCH = 24, 6, 3, 2
NARROW = {"sink_size": 1, "window_size": 1, "heavy_size": 5}  # the generated keys leave the window
GRAPHS = {
    "quest": {**NARROW, "page_size": 1},
    "hashattention": {**NARROW, "hat_bits": 32},
    "pqcache": {**NARROW, "pq_bits": 3},
    "socket": NARROW,
    "double_sparsity": NARROW,  # with random label channels (_calibration_overrides)
    "magicpig": {"sink_size": 1, "window_size": 1, "lsh_l": 16, "lsh_k": 4, "seed": 0},
    "h2o": {"heavy_size": 20, "recent_size": 3},  # on a sharpened model (SHARPEN)
    "tova": {"budget": 8},
    # a smoke and regression check: SnapKV chooses its kept set at the dense prefill, from the
    # beams of a prompt while they are still identical rows, so they never differ (without the
    # reorder it passes too)
    "snapkv": {"budget": 6, "window_size": 4, "kernel_size": 3},
}
TOL = 1e-4
#: Query weights scaled up for a graph, so that its attention is peaked: the tiny model's is
#: nearly uniform, H2O's accumulated scores then rank the keys by position alone, and every
#: beam of a prompt evicts the same keys (beam search would pass without moving its State).
#: Sharpened, the key H2O evicts at a step depends on the beam's tokens.
SHARPEN = {"h2o": 30.0}


def recording(cache_class: type) -> type:
    """A subclass of a transformers cache class that keeps every ``beam_idx`` it is reordered by."""

    class Recording(cache_class):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            self.orders: list[torch.Tensor] = []

        def reorder_cache(self, beam_idx: torch.Tensor) -> None:
            self.orders.append(beam_idx.clone())
            super().reorder_cache(beam_idx)

    return Recording


@pytest.fixture(scope="module")
def hash_weights(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("beam") / "hat.safetensors"
    save_hash_weights(path, random_hash_weights(2, 4, 2, 16, bits=32, hidden=8, seed=0))
    return str(path)


def prompts() -> torch.Tensor:
    """Two different prompts of PROMPT tokens (no padding)."""
    return torch.randint(3, 256, (BATCH, PROMPT), generator=torch.Generator().manual_seed(4))


def beam_search(
    model, ids: torch.Tensor, cache: Any = None
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """(logits (NEW, B·BEAMS, V) of each call, the input ids of each call, each reorder's
    beam_idx), on ``cache`` (a :func:`recording` cache; default dynamic)."""
    cache = recording(DynamicCache)(config=model.config) if cache is None else cache
    fed: list[torch.Tensor] = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["input_ids"].clone()), with_kwargs=True
    )
    try:
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                cache=cache,
                num_beams=BEAMS,
                max_new_tokens=NEW,
                min_new_tokens=NEW,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=0,
            )
    finally:
        hook.remove()
    return torch.stack(out.logits), fed, cache.orders


def sequences_of_each_call(fed: list[torch.Tensor], orders: list[torch.Tensor]) -> list[torch.Tensor]:
    """Row b's tokens at each call (B·BEAMS, PROMPT + t): the prompt, then at each step the
    sequence of the row it was reordered from, plus the token it was fed."""
    rows = fed[0]
    held = [rows]
    for step, tokens in enumerate(fed[1:]):
        rows = torch.cat([rows[orders[step]], tokens], dim=1)
        held.append(rows)
    return held


def replayed_logits(model, rows: torch.Tensor) -> torch.Tensor:
    """Logits (B, V) of the last token of each row's sequence ``rows`` (B, PROMPT + t): the
    prompt prefilled, then one token per call, on a fresh cache (a new request)."""
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        out = model(
            input_ids=rows[:, :PROMPT],
            attention_mask=torch.ones_like(rows[:, :PROMPT]),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        for j in range(PROMPT, rows.shape[1]):
            out = model(
                input_ids=rows[:, j : j + 1],
                attention_mask=torch.ones_like(rows[:, : j + 1]),
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
    return out.logits[:, -1].float()


def check_against_replays(model, logits, fed, orders) -> None:
    """Beam search's logits at every call equal those of each row's sequence replayed apart."""
    assert len(fed) == NEW and all(t.shape == (BATCH * BEAMS, 1) for t in fed[1:])
    held = sequences_of_each_call(fed, orders)
    # a reorder that moves a row's state onto a row holding another sequence (the first one
    # after the prefill only copies identical rows: the beams of a prompt)
    assert any(
        not torch.equal(held[step][order[row]], held[step][row])
        for step, order in enumerate(orders[: NEW - 1])
        for row in range(BATCH * BEAMS)
    ), orders
    for step, rows in enumerate(held):
        expected = replayed_logits(model, rows)
        worst = (logits[step] - expected).abs().max().item()
        assert worst <= TOL, f"call {step} differs from its sequences replayed apart by {worst}"


def assert_same_slots(state: mg.State, expected: mg.State) -> None:
    """Every slot of ``state`` holds the entries of ``expected``'s, each equal (tensors within
    float tolerance, everything else exactly): those its operator declares per-row
    (``batch_rows``) and those it does not."""
    assert state.keys(), "the graph kept no state"
    assert sorted(state.keys()) == sorted(expected.keys())
    for layer, node in state.keys():
        got, want = state.slot(layer, node), expected.slot(layer, node)
        where = f"layer {layer}, node '{node}'"
        assert sorted(got) == sorted(want), where
        for name in got:
            assert_same_entry(got[name], want[name], f"{where}, entry '{name}'")


def assert_same_entry(got: Any, want: Any, where: str) -> None:
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), where
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=lambda m: f"{where}: {m}")
    elif isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), where
        for key in want:
            assert_same_entry(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (tuple, list)):
        assert type(got) is type(want) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same_entry(a, b, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


#: HashAttention's decode-step signatures run Triton's interpreter on the CPU: with --runslow.
#: Sparse mode on a dynamic cache: Quest and PQCache (sparse mode's estimators read their State).
CASES = [
    pytest.param(name, "simulate", marks=[pytest.mark.slow] if name == "hashattention" else [])
    for name in GRAPHS
] + [pytest.param(name, "sparse") for name in ("quest", "pqcache")]


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_beam_search_equals_each_sequence_replayed_apart(name, mode, hash_weights, tmp_path):
    from test_inject import _calibration_overrides

    model = tiny_model("llama")  # 2 layers, 4 query / 2 KV heads, head dim 16
    if name in SHARPEN:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.weight.mul_(SHARPEN[name])
    overrides = dict(GRAPHS[name])
    if name == "hashattention":
        overrides["hat_weights"] = hash_weights
    else:
        overrides.update(_calibration_overrides(name, tmp_path))
    with mg.inject(model, name, mode=mode, overrides=overrides) as handle:
        logits, fed, orders = beam_search(model, prompts())
        after = handle.state
        check_against_replays(model, logits, fed, orders)
        held = sequences_of_each_call(fed, orders)
        # the State left after the last call (and the reorder beam search made after it, if any)
        last = held[-1] if len(orders) < NEW else held[-1][orders[NEW - 1]]
        replayed_logits(model, last)
        assert_same_slots(after, handle.state)


@pytest.mark.parametrize("mode", ["simulate", pytest.param("sparse", marks=pytest.mark.slow)])
def test_beam_search_on_a_static_cache(mode):
    """transformers' StaticCache: in sparse mode Quest reads the whole static buffer and
    rewrites its page bounds in place each step; beam search reorders the buffer, and the
    bounds move with it."""
    model = tiny_model("llama")
    cache = recording(StaticCache)(config=model.config, max_cache_len=PROMPT + NEW + 2)
    with mg.inject(model, "quest", mode=mode, overrides=GRAPHS["quest"]) as handle:
        logits, fed, orders = beam_search(model, prompts(), cache)
        if mode == "sparse":  # every graph call read the static buffer
            assert handle.static_calls == handle.calls > 0
        check_against_replays(model, logits, fed, orders)


def test_an_operator_whose_state_cannot_follow_refuses_beam_search_naming_the_node():
    """A stateful operator that declares no ``batch_rows``: greedy decoding runs; beam search
    stops at the first reorder after the operator filled its slot, naming the node, the graph
    and what to do instead."""
    from maskgraph.registry import REGISTRY, Port, operator
    from maskgraph.types import PortType

    def remember(keys, values, params, slot, layer_idx):
        slot["first_key"] = keys[:, :, :1].clone()
        return {}

    @operator(
        "beam_test_memo",
        family="utility",
        output=PortType.MASK,
        inputs=[Port("keys", PortType.KEYS)],
        prepare=remember,
        stateful=True,
    )
    def beam_test_memo(env, *, prep):
        return torch.ones(1, 1, 1, env.K, device=env.keys.device)

    graph = {"graph": "memo", "nodes": [{"name": "memo", "op": "beam_test_memo"}], "output": "memo"}
    try:
        model = tiny_model("llama")
        with mg.inject(model, graph) as handle:
            with torch.no_grad():
                model.generate(prompts(), max_new_tokens=2, do_sample=False, pad_token_id=0)
            assert handle.state.peek(0, "memo")
            with pytest.raises(mg.NotSupportedError, match=r"graph 'memo', node 'memo'.*num_beams=1"):
                beam_search(model, prompts())
    finally:
        REGISTRY.pop("beam_test_memo", None)


def _decode(model, cache, ids, steps: int) -> None:
    """Prefill ``ids`` on ``cache``, then feed ``steps`` tokens one per call."""
    with torch.no_grad():
        model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        for j in range(steps):
            token = ids[:, j : j + 1]
            model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)


def test_a_reorder_through_the_model_hook_moves_the_state_and_one_behind_its_back_is_refused():
    """``model._reorder_cache`` (what beam search calls) leaves Quest's page bounds those of the
    reordered keys; ``cache.reorder_cache`` called directly between two calls of a request
    leaves the State describing other rows, and the next call says so."""
    from maskgraph.ops.zoo.quest import page_min_max

    model = tiny_model("llama")
    ids = torch.randint(3, 256, (3, 9), generator=torch.Generator().manual_seed(5))
    order = torch.tensor([2, 0, 2])
    with mg.inject(model, "quest", protocol="sparse", overrides=GRAPHS["quest"]) as handle:
        cache = DynamicCache(config=model.config)
        _decode(model, cache, ids, 2)
        assert model._reorder_cache(cache, order) is cache
        for layer in (0, 1):
            slot = handle.state.slot(layer, "bounds")
            lo, hi = page_min_max(cache.layers[layer].keys, 1)
            assert torch.equal(slot["lo"], lo) and torch.equal(slot["hi"], hi)
        with torch.no_grad():
            model(input_ids=ids[:, :1], cache=cache, use_cache=True, logits_to_keep=1)
        cache.reorder_cache(order)
        with pytest.raises(mg.NotSupportedError, match=r"replaced since the last call.*_reorder_cache"):
            with torch.no_grad():
                model(input_ids=ids[:, :1], cache=cache, use_cache=True, logits_to_keep=1)
    assert "_reorder_cache" not in model.__dict__  # removed with the injection


@pytest.mark.parametrize("problem", ["bool beam_idx", "state of other rows"])
def test_a_reorder_that_the_state_cannot_follow_is_refused_before_the_cache_moves(problem):
    """A bool ``beam_idx`` (it would select rows, not order them), per-row state of the wrong
    row count at the last layer: refused before the cache or any layer's State moved."""
    model = tiny_model("llama")
    ids = torch.randint(3, 256, (3, 9), generator=torch.Generator().manual_seed(5))
    with mg.inject(model, "quest", overrides=GRAPHS["quest"]) as handle:
        cache = DynamicCache(config=model.config)
        _decode(model, cache, ids, 2)
        keys = [layer.keys for layer in cache.layers]
        first = handle.state.slot(0, "bounds")["lo"]
        if problem == "bool beam_idx":
            with pytest.raises(mg.NotSupportedError, match=r"beam_idx must be a 1-D integer tensor.*bool"):
                model._reorder_cache(cache, torch.tensor([True, False, True]))
        else:
            handle.state.slot(1, "bounds")["hi"] = handle.state.slot(1, "bounds")["hi"][:2]
            with pytest.raises(mg.ShapeError, match=r"layer 1, node 'bounds', state entry 'hi'.*2 rows.*3"):
                model._reorder_cache(cache, torch.tensor([2, 0, 2]))
        assert all(layer.keys is k for layer, k in zip(cache.layers, keys))
        assert handle.state.slot(0, "bounds")["lo"] is first


def test_the_models_own_reorder_hook_is_wrapped_and_restored():
    """A model class's own ``_reorder_cache`` still reorders the cache (the State follows); an
    instance attribute ``_reorder_cache`` the model had is called, then put back by remove()."""
    from maskgraph.ops.zoo.quest import page_min_max

    base = tiny_model("llama")
    seen: list[torch.Tensor] = []

    class OwnHook(type(base)):
        def _reorder_cache(self, cache, beam_idx):
            seen.append(beam_idx)
            cache.reorder_cache(beam_idx)
            return cache

    ids = torch.randint(3, 256, (3, 9), generator=torch.Generator().manual_seed(5))
    order = torch.tensor([2, 0, 2])
    model = tiny_model("llama")
    model.__class__ = OwnHook
    with mg.inject(model, "quest", overrides=GRAPHS["quest"]) as handle:
        cache = DynamicCache(config=model.config)
        _decode(model, cache, ids, 2)
        assert model._reorder_cache(cache, order) is cache
        assert len(seen) == 1
        lo, _ = page_min_max(cache.layers[0].keys, 1)
        assert torch.equal(handle.state.slot(0, "bounds")["lo"], lo)
    assert "_reorder_cache" not in model.__dict__
    assert model._reorder_cache.__func__ is OwnHook._reorder_cache

    def instance_hook(cache, beam_idx):
        seen.append(beam_idx)
        cache.reorder_cache(beam_idx)
        return cache

    model = tiny_model("llama")
    model._reorder_cache = instance_hook
    with mg.inject(model, "quest", overrides=GRAPHS["quest"]):
        cache = DynamicCache(config=model.config)
        _decode(model, cache, ids, 2)
        assert model._reorder_cache is not instance_hook
        model._reorder_cache(cache, order)
        assert len(seen) == 2
    assert model.__dict__["_reorder_cache"] is instance_hook


def test_beam_search_on_a_model_around_the_injected_one_is_refused():
    """Injected into the inner model, the injection never sees the outer model's reorder: the
    next call finds the cache's rows replaced and says which model to inject."""
    model = tiny_model("llama")
    with mg.inject(model.model, "quest", overrides=GRAPHS["quest"]):
        with pytest.raises(
            mg.NotSupportedError, match=r"rows were replaced.*inject the model you call generate on"
        ):
            beam_search(model, prompts())
