"""Shared behaviour of the zoo score estimators (Quest, PQ, HashAttention, Double Sparsity, SOCKET).

Method-specific float64 references live in tests/ops/test_estimators_<method>.py; here: every
graph runs (GQA, Q = 1 and Q > 1, float32 and bf16, no NaN), the sparse-mode scores agree with
the simulate-mode scores, caches are incremental, per layer, per request, and rebuilt when K
shrinks, and missing calibration fails with the command that makes the file.
"""

from __future__ import annotations

import pytest
import torch
from shipped import graphs_using, shrunk

import maskgraph as mg
from maskgraph.env import Env
from maskgraph.ops.zoo.double_sparsity import save_channels
from maskgraph.ops.zoo.hashattention import random_hash_weights, save_hash_weights

D = 16
HKV = 2
GRAPHS = graphs_using("estimator", except_ops=("exact",))
#: estimator operator -> (its node params for tests, block size of its sparse scores)
ESTIMATORS = {
    "quest": dict(page_size=4, label_bits=16),
    "pq": dict(pq_group_factor=2, pq_bits=3, kmeans_iter=3, metric="euclidean", seed=0),
    "hashattention": dict(weights=None, hat_bits=40),
    "double_sparsity": dict(channels=None, group_factor=2, label_bits=4),
    "socket": dict(tables=4, bits=3, tau=0.5, seed=1),
}


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    """Weights and channel files for 2 layers, Hq = 4 or 6 (two files), Hkv = 2, D = 16."""
    root = tmp_path_factory.mktemp("calib")
    files = {}
    for hq in (4, 6):
        hw = root / f"hash{hq}.safetensors"
        save_hash_weights(hw, random_hash_weights(2, hq, HKV, D, 40, 8, seed=hq))
        files[("hashattention", hq)] = str(hw)
    gen = torch.Generator().manual_seed(3)
    channels = torch.stack(
        [torch.stack([torch.randperm(D, generator=gen) for _ in range(HKV)]) for _ in range(2)]
    )
    ch = root / "channels.safetensors"
    save_channels(ch, channels, {"model": "random"})
    files[("double_sparsity", 4)] = files[("double_sparsity", 6)] = str(ch)
    return files


def op_params(op: str, calib, hq: int = 4) -> dict:
    params = dict(ESTIMATORS[op])
    if op == "hashattention":
        params["weights"] = calib[("hashattention", hq)]
    if op == "double_sparsity":
        params["channels"] = calib[("double_sparsity", hq)]
    return params


#: small settings by graph parameter: each graph takes those it has
GRAPH_PARAMS = dict(sink_size=2, window_size=3, heavy_size=0.3, page_size=4, pq_bits=3, kmeans_iter=3)
GRAPH_PARAMS.update(hat_bits=40, group_factor=2, socket_tables=4, socket_bits=3)


def graph_overrides(name: str, calib, hq: int = 4) -> dict:
    files = {"hat_weights": calib[("hashattention", hq)], "ds_channels": calib[("double_sparsity", hq)]}
    return shrunk(name, {**GRAPH_PARAMS, **files})


def test_every_zoo_estimator_has_test_settings():
    """The tests below run every registered estimator but the exact oracle (a new one needs its
    settings in ESTIMATORS) and every shipped graph that uses one (at least the five of today)."""
    registered = {name for name, spec in mg.all_ops().items() if spec.family == "estimator"} - {"exact"}
    assert set(ESTIMATORS) == registered
    assert set(GRAPHS) >= {"quest", "pqcache", "hashattention", "double_sparsity", "socket"}


def qkv(b=1, hq=4, q=3, k=37, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    make = lambda *s: torch.randn(*s, generator=gen).to(dtype)  # noqa: E731
    return make(b, hq, q, D), make(b, HKV, k, D), make(b, HKV, k, D)


def causal_mask(q: int, k: int) -> torch.Tensor:
    """Additive (1, 1, q, k): query i at position k − q + i sees keys ≤ its position."""
    pos = torch.arange(k - q, k).view(-1, 1)
    allowed = torch.arange(k).view(1, -1) <= pos
    return torch.zeros(1, 1, q, k).masked_fill(~allowed, float("-inf"))


def run_estimator(op, params, queries, keys, values, am=None, slot=None, layer_idx=0):
    """(simulate scores (B, Hq, Q, K), env, prep) of estimator ``op``."""
    spec = mg.get_op(op)
    prep = spec.prepare(keys, values, params, {} if slot is None else slot, layer_idx)
    q_pos = torch.arange(keys.shape[2] - queries.shape[2], keys.shape[2])
    env = Env(queries, keys, values, am, D**-0.5, q_pos, layer_idx)
    return spec.fn(env, **params, prep=prep), env, prep


# ----- every graph runs -------------------------------------------------------------------------
@pytest.mark.parametrize("name", GRAPHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("hq,q", [(4, 1), (4, 5), (6, 1), (6, 4)])
def test_graph_runs_gqa_no_nan(name, dtype, hq, q, calib):
    attn = mg.compile(mg.load_graph(f"graphs/{name}.yaml", overrides=graph_overrides(name, calib, hq)))
    queries, keys, values = qkv(b=2, hq=hq, q=q, k=29, dtype=dtype)
    am = causal_mask(q, 29)
    out = attn(queries, keys, values, attention_mask=am, state=mg.State())
    assert out.shape == (2, hq, q, D) and out.dtype == dtype
    assert not torch.isnan(out).any()
    mask = attn.mask(queries, keys, values, attention_mask=am)
    assert ((mask == 0) | (mask == 1)).all()
    assert (mask[am.expand_as(mask) == float("-inf")] == 0).all()  # nothing forbidden is attended
    # sink 2 + window 3 + heavy 0.3·29 = 8 (Quest: 2 pages of 4); never more than that.
    assert (mask.sum(-1) <= 2 + 3 + 8).all() and (mask.sum(-1) >= 3).all()


@pytest.mark.parametrize("name", GRAPHS)
def test_graph_full_budget_is_dense(name, calib):
    """heavy_size 1.0 keeps every key, so the output is dense attention (a check on wiring)."""
    o = graph_overrides(name, calib)
    o["heavy_size"] = 1.0
    attn = mg.compile(mg.load_graph(f"graphs/{name}.yaml", overrides=o))
    queries, keys, values = qkv(q=2, k=24)
    dense = torch.softmax(torch.einsum("bhqd,bhkd->bhqk", queries, keys.repeat_interleave(2, 1)) / 4, -1)
    ref = dense @ values.repeat_interleave(2, 1)
    torch.testing.assert_close(attn(queries, keys, values), ref, atol=1e-5, rtol=1e-5)


# ----- sparse-mode contract ---------------------------------------------------------------------
@pytest.mark.parametrize("op", list(ESTIMATORS))
@pytest.mark.parametrize("hq,q,k", [(4, 1, 37), (6, 3, 29), (4, 8, 8)])
def test_sparse_scores_expand_to_simulate_scores(op, hq, q, k, calib):
    params = op_params(op, calib, hq)
    queries, keys, values = qkv(hq=hq, q=q, k=k, seed=k)
    am = causal_mask(q, k)
    scores, env, prep = run_estimator(op, params, queries, keys, values, am=am)
    made = mg.get_op(op).sparse.scores(env, prep, **params)
    sparse, block = made.scores, made.block
    nb = -(-k // block)
    assert sparse.shape == (1, hq, q, nb) and sparse.dtype == torch.float32
    tokens = sparse.repeat_interleave(block, -1)[..., :k]
    allowed = am.expand_as(scores) > float("-inf")
    torch.testing.assert_close(tokens[allowed], scores[allowed], rtol=0, atol=0)
    assert (scores[~allowed] == float("-inf")).all()
    # A block is −inf exactly when it holds no allowed key.
    blocks_allowed = torch.nn.functional.pad(allowed, (0, nb * block - k)).view(1, hq, q, nb, block)
    assert torch.equal(sparse > float("-inf"), blocks_allowed.any(-1))


def test_sparse_scores_do_not_read_keys(calib):
    """The sparse scores use the prepare caches only: with the keys replaced by garbage in the
    Env, they do not change."""
    for op in ESTIMATORS:
        params = op_params(op, calib)
        queries, keys, values = qkv(q=2, k=21)
        _, env, prep = run_estimator(op, params, queries, keys, values)
        fn = mg.get_op(op).sparse.scores
        before = fn(env, prep, **params).scores
        env.keys = torch.full_like(keys, float("nan"))
        env.values = torch.full_like(values, float("nan"))
        after = fn(env, prep, **params).scores
        assert torch.equal(before, after), op


# ----- caches: incremental, per layer, per request, rebuilt on shrink ---------------------------
CACHES = {
    "quest": ("lo", "hi"),
    "pq": ("codes",),
    "hashattention": ("key_words",),
    "double_sparsity": ("labels", "lo", "step"),
    "socket": ("codes", "vnorm"),
}


@pytest.mark.parametrize("op", list(ESTIMATORS))
def test_cache_grows_incrementally(op, calib):
    params = op_params(op, calib)
    _, keys, values = qkv(k=45)
    spec = mg.get_op(op)
    slot: dict = {}
    spec.prepare(keys[:, :, :30], values[:, :, :30], params, slot, 0)
    first = {name: slot[name].clone() for name in CACHES[op]}
    grown = spec.prepare(keys, values, params, slot, 0)
    start = (30 // 4) * 4 if op == "quest" else 30  # Quest redoes the partial last page only
    assert slot["updated"] == (start, 45)
    fresh = spec.prepare(keys, values, params, {}, 0) if op != "pq" else None
    for name in CACHES[op]:
        if fresh is not None:
            torch.testing.assert_close(grown[name], fresh[name], rtol=0, atol=0)
        if op != "quest":  # cached rows of earlier keys are kept as they were
            assert torch.equal(grown[name][:, :, :30], first[name])
    # One more decode step: exactly one new key processed.
    spec.prepare(
        torch.cat([keys, keys[:, :, :1]], 2), torch.cat([values, values[:, :, :1]], 2), params, slot, 0
    )
    assert slot["updated"] == ((45 // 4) * 4 if op == "quest" else 45, 46)


@pytest.mark.parametrize("op", list(ESTIMATORS))
def test_cache_rebuilt_when_keys_shrink(op, calib):
    params = op_params(op, calib)
    _, keys, values = qkv(k=40, seed=1)
    _, short_k, short_v = qkv(k=20, seed=2)
    spec = mg.get_op(op)
    slot: dict = {}
    spec.prepare(keys, values, params, slot, 0)
    got = spec.prepare(short_k, short_v, params, slot, 0)
    assert slot["updated"] == (0, 20)
    want = spec.prepare(short_k, short_v, params, {}, 0)
    for name in CACHES[op]:
        assert torch.equal(got[name], want[name])


@pytest.mark.parametrize("name", GRAPHS)
def test_state_per_layer_and_per_request(name, calib):
    attn = mg.compile(mg.load_graph(f"graphs/{name}.yaml", overrides=graph_overrides(name, calib)))
    q0, k0, v0 = qkv(q=2, k=33, seed=10)
    q1, k1, v1 = qkv(q=2, k=41, seed=11)  # longer: a shared slot would reuse layer 0's rows
    state = mg.State()
    m0 = attn.mask(q0, k0, v0, state=state, layer_idx=0)
    m1 = attn.mask(q1, k1, v1, state=state, layer_idx=1)
    assert sorted({layer for layer, _ in state.keys()}) == [0, 1]  # a slot per node and layer
    # Each layer's result is what a fresh state gives: nothing leaks between layers.
    assert torch.equal(m0, attn.mask(q0, k0, v0, state=mg.State(), layer_idx=0))
    assert torch.equal(m1, attn.mask(q1, k1, v1, state=mg.State(), layer_idx=1))
    node = "bounds" if name in ("quest", "snapkv_quest") else "scores"
    assert state.slot(0, node)["n"] == 33 and state.slot(1, node)["n"] == 41
    second = mg.State()
    assert len(second) == 0
    assert torch.equal(attn.mask(q1, k1, v1, state=second, layer_idx=0), attn.mask(q1, k1, v1, layer_idx=0))


# ----- calibration needed -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,command",
    [
        ("hashattention", "maskgraph calibrate hashattention --model NAME --out FILE"),
        ("double_sparsity", "maskgraph calibrate double-sparsity --model NAME --out FILE"),
    ],
)
def test_missing_calibration_names_the_command(name, command, tmp_path):
    attn = mg.compile(mg.load_graph(f"graphs/{name}.yaml"))
    queries, keys, values = qkv(q=1, k=9)
    with pytest.raises(mg.CalibrationError, match=command):
        attn(queries, keys, values)
    key = "hat_weights" if name == "hashattention" else "ds_channels"
    attn = mg.compile(mg.load_graph(f"graphs/{name}.yaml", overrides={key: str(tmp_path / "none")}))
    with pytest.raises(mg.CalibrationError, match="does not exist.*" + command):
        attn(queries, keys, values)


@pytest.mark.slow
@pytest.mark.parametrize("name", GRAPHS)
def test_inductor_matches_eager_across_decode_steps(name, calib):
    """torch.compile(fullgraph=True, dynamic=True) runs every graph, same output as eager, with
    a State carried over growing K."""
    g = mg.load_graph(f"graphs/{name}.yaml", overrides=graph_overrides(name, calib))
    eager, compiled = mg.compile(g), mg.compile(g, backend="inductor")
    queries, keys, values = qkv(q=1, k=45, seed=4)
    s_eager, s_compiled = mg.State(), mg.State()
    for k in (37, 38, 45):
        want = eager(queries, keys[:, :, :k], values[:, :, :k], state=s_eager)
        got = compiled(queries, keys[:, :, :k], values[:, :, :k], state=s_compiled)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
