"""Samplers of the zoo: Partial, uniform random sampling, MagicPIG, vAttention.

Deterministic pieces are checked against float64 references written plainly here. Statistical
properties are checked with fixed seeds (so every test is deterministic); each statistical
assertion states in a comment the probability that it would fail for a correct implementation
on a fresh seed.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch
from shipped import graphs_using

import maskgraph as mg
from maskgraph.env import Env
from maskgraph.ops.zoo import magicpig as mp
from maskgraph.ops.zoo import sampling, vattention
from maskgraph.ops.zoo.partial import Partial

GRAPHS = graphs_using("sampler")


# ----- helpers --------------------------------------------------------------------------------
def qkv(b, hq, hkv, q, k, d, dtype=torch.float32, seed=0, scale=1.0, v_shift=0.0):
    g = torch.Generator().manual_seed(seed)
    queries = (torch.randn(b, hq, q, d, generator=g) * scale).to(dtype)
    keys = torch.randn(b, hkv, k, d, generator=g).to(dtype)
    values = (torch.randn(b, hkv, k, d, generator=g) + v_shift).to(dtype)
    return queries, keys, values


def ref_logits(queries, keys, scaling):
    """(B, Hq, Q, K) float64 logits with the G-fold key expansion done plainly."""
    g = queries.shape[1] // keys.shape[1]
    k = keys.double().repeat_interleave(g, dim=1)
    return torch.einsum("bhqd,bhkd->bhqk", queries.double(), k) * scaling


def ref_dense(queries, keys, values):
    scaling = queries.shape[-1] ** -0.5
    s = ref_logits(queries, keys, scaling)
    g = queries.shape[1] // keys.shape[1]
    v = values.double().repeat_interleave(g, dim=1)
    return torch.softmax(s, dim=-1) @ v


def rel_err(out, ref):
    """Per-row relative error ‖o − o_ref‖ / ‖o_ref‖: (B, Hq, Q)."""
    return (out.double() - ref).norm(dim=-1) / ref.norm(dim=-1)


def sampler_graph(op, params, prior=True):
    """sink(1) ∪ sampler over the rest, or the sampler alone (prior = False)."""
    nodes = [{"name": "sink", "op": "sink", "params": {"size": 1}}]
    s = {"name": "s", "op": op, "params": params}
    if prior:
        s["inputs"] = {"prior": "sink"}
        if op == "vattention_sample":
            nodes.append({"name": "part", "op": "partial", "inputs": {"mask": "sink"}})
            s["inputs"]["partial"] = "part"
        nodes += [s, {"name": "out", "op": "union", "inputs": {"masks": ["sink", "s"]}}]
        return mg.load_graph({"graph": "t", "nodes": nodes, "output": "out"})
    return mg.load_graph({"graph": "t", "nodes": [s], "output": "s"})


def ht_sums(queries, keys, values, mask):
    """Horvitz–Thompson numerator (B,Hq,Q,D) and denominator (B,Hq,Q) in float64, relative to
    the dense max (so that they are unbiased for the dense sums)."""
    scaling = queries.shape[-1] ** -0.5
    s = ref_logits(queries, keys, scaling)
    m = s.amax(-1, keepdim=True)
    mask = mask.double()
    w = torch.where(mask > 0, torch.exp(s - m) / mask.clamp_min(1e-300), 0.0)
    g = queries.shape[1] // keys.shape[1]
    v = values.double().repeat_interleave(g, dim=1)
    return w @ v, w.sum(-1)


def dense_sums(queries, keys, values):
    return ht_sums(queries, keys, values, torch.ones(1))


# ----- counter-based random numbers -----------------------------------------------------------
def test_mul32_and_mix32_match_python_integers():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 2**32, (1000,), generator=g, dtype=torch.int64)
    for c in (0x7FEB352D, 0x846CA68B, 0xFFFFFFFF, 1):
        got = sampling._mul32(x, c)
        want = torch.tensor([(int(v) * c) % 2**32 for v in x], dtype=torch.int64)
        assert torch.equal(got, want)
    y = sampling.mix32(x)
    assert int(y.min()) >= 0 and int(y.max()) < 2**32
    assert len(set(y.tolist())) == len(set(x.tolist()))  # a bijection keeps distinct values


def _env(q, k, v, q_pos=None, layer_idx=0, am=None):
    if q_pos is None:
        q_pos = torch.arange(k.shape[2] - q.shape[2], k.shape[2])
    return Env(q, k, v, am, q.shape[-1] ** -0.5, q_pos, layer_idx)


def test_uniform_is_uniform_reproducible_and_chunk_independent():
    q, k, v = qkv(2, 4, 2, 8, 300, 8)
    seed = sampling.draw_seed(123, torch.device("cpu"))
    u = sampling.uniform(_env(q, k, v), seed, salt=7)
    assert u.shape == (2, 4, 8, 300)
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    n = u.numel()
    # mean of n uniforms: sd = sqrt(1/12/n); a 5-sd band fails with probability < 1e-6.
    assert abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    # chi-square over 20 bins (19 dof): 60 is beyond the 1e-6 quantile (≈ 57).
    counts = torch.histc(u, bins=20, min=0.0, max=1.0)
    chi2 = float(((counts - n / 20) ** 2 / (n / 20)).sum())
    assert chi2 < 60
    # the same coordinates give the same numbers in any chunking
    first = sampling.uniform(_env(q[:, :, :3], k, v, torch.arange(292, 295)), seed, salt=7)
    assert torch.equal(first, u[:, :, :3])
    assert torch.equal(sampling.uniform(_env(q, k, v), seed, salt=7), u)
    other_seed = sampling.uniform(_env(q, k, v), sampling.draw_seed(124, torch.device("cpu")), 7)
    other_salt = sampling.uniform(_env(q, k, v), seed, salt=8)
    other_layer = sampling.uniform(_env(q, k, v), sampling.draw_seed(123, torch.device("cpu"), 1), 7)
    for w in (other_seed, other_salt, other_layer):
        # two independent streams agree on a float with probability ~ n · 2^-24
        assert float((w == u).float().mean()) < 0.01
        # correlation of independent uniforms: sd 1/sqrt(n); 6 sd ≈ 1e-9 failure probability.
        c = torch.corrcoef(torch.stack([u.flatten(), w.flatten()]))[0, 1]
        assert abs(float(c)) < 6 / math.sqrt(n)


# ----- Partial ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 4, 2, 1, 5, 8), (2, 6, 2, 7, 7, 16), (1, 2, 1, 3, 37, 4)])
def test_partial_matches_float64_reference(shape):
    b, hq, hkv, q, k, d = shape
    queries, keys, values = qkv(b, hq, hkv, q, k, d, seed=q * k)
    g = torch.Generator().manual_seed(5)
    probs = torch.rand(b, hq, q, k, generator=g)
    probs = torch.where(probs < 0.4, torch.zeros_like(probs), probs)
    probs[0, 0, 0] = 0.0  # one empty row
    spec = mg.get_op("partial")
    assert spec.output == mg.PortType.PARTIAL
    part = spec.fn(_env(queries, keys, values), mask=probs)
    assert isinstance(part, Partial)
    s = ref_logits(queries, keys, d**-0.5)
    keep = probs > 0
    m = torch.where(keep, s, -math.inf).amax(-1)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w = torch.where(keep, torch.exp(s - m.unsqueeze(-1)) / probs.double(), 0.0)
    v = values.double().repeat_interleave(hq // hkv, dim=1)
    torch.testing.assert_close(part.num.double(), w @ v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(part.den.double(), w.sum(-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(part.m.double(), m, rtol=1e-5, atol=1e-5)
    assert float(part.den[0, 0, 0]) == 0.0 and float(part.num[0, 0, 0].abs().sum()) == 0.0


def test_partial_rescale_to_a_common_max():
    from maskgraph.ops.zoo.partial import rescale

    num = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    den = torch.tensor([[[2.0, 0.0]]])
    m = torch.tensor([[[1.0, 50.0]]])
    n2, d2 = rescale(Partial(num, den, m), torch.tensor([[[3.0, 3.0]]]))
    scale = math.exp(1.0 - 3.0)
    torch.testing.assert_close(d2, torch.tensor([[[2.0 * scale, 0.0]]]))
    torch.testing.assert_close(n2, torch.tensor([[[[scale, 2 * scale], [0.0, 0.0]]]]))


# ----- random sampling --------------------------------------------------------------------------
def test_random_sample_values_prior_and_attention_mask():
    queries, keys, values = qkv(2, 4, 2, 6, 50, 8)
    am = torch.zeros(1, 1, 6, 50)
    am[..., 40:] = -math.inf  # forbid the last ten keys
    attn = mg.compile(sampler_graph("random_sample", {"sampling_rate": 0.3, "seed": 1}))
    p = attn.mask(queries, keys, values, attention_mask=am)
    vals = torch.unique(p).tolist()
    assert vals == [0.0, pytest.approx(0.3), 1.0]
    assert torch.all(p[..., 0] == 1.0)  # the prior (sink) is exact, never resampled
    assert torch.all(p[..., 40:] == 0.0)
    kept = (p[..., 1:40] > 0).float()
    n = kept.numel()
    # binomial(n, 0.3): a 5-sd band fails with probability < 1e-6
    assert abs(float(kept.mean()) - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n)


def test_random_sample_seed_reproducible_and_null_is_fresh():
    queries, keys, values = qkv(1, 2, 1, 2, 64, 8)
    fixed = mg.compile(sampler_graph("random_sample", {"sampling_rate": 0.5, "seed": 9}))
    assert torch.equal(fixed.mask(queries, keys, values), fixed.mask(queries, keys, values))
    fresh = mg.compile(sampler_graph("random_sample", {"sampling_rate": 0.5}))
    torch.manual_seed(0)
    a = fresh.mask(queries, keys, values)
    b = fresh.mask(queries, keys, values)
    torch.manual_seed(0)
    c = fresh.mask(queries, keys, values)
    # 2·64 fair coins agreeing by chance: probability 2^-126
    assert not torch.equal(a, b)
    assert torch.equal(a, c)  # torch.manual_seed makes fresh randomness repeatable


def test_random_sample_tiny_k_does_not_raise():
    queries, keys, values = qkv(1, 2, 1, 1, 3, 4)
    attn = mg.compile(sampler_graph("random_sample", {"sampling_rate": 0.01, "seed": 0}))
    out = attn(queries, keys, values)
    assert torch.isfinite(out).all()


def test_random_sampling_error_falls_as_rate_grows():
    queries, keys, values = qkv(1, 4, 2, 8, 400, 16, seed=3, v_shift=0.5)
    ref = ref_dense(queries, keys, values)
    errs = []
    for rate in (0.05, 0.2, 0.8):
        attn = mg.compile(sampler_graph("random_sample", {"sampling_rate": rate, "seed": 11}))
        errs.append(float(rel_err(attn(queries, keys, values), ref).mean()))
    # The error of a Bernoulli-sampled mean scales like sqrt((1 − r)/r): ratios ≈ 2.3 and 4;
    # averaged over 32 rows a reversal is a many-sd event (< 1e-6).
    assert errs[0] > 1.5 * errs[1] > 1.5 * 1.5 * errs[2]
    assert errs[2] < 0.1


def test_random_sampling_is_unbiased_over_draws():
    queries, keys, values = qkv(1, 2, 1, 1, 200, 8, seed=4, v_shift=0.5)
    attn = mg.compile(sampler_graph("random_sample", {"sampling_rate": 0.1}, prior=False))
    torch.manual_seed(1)
    draws = 300
    nums, dens = zip(
        *(ht_sums(queries, keys, values, attn.mask(queries, keys, values)) for _ in range(draws))
    )
    nums, dens = torch.stack(nums), torch.stack(dens)
    num_ref, den_ref = dense_sums(queries, keys, values)
    # mean of `draws` unbiased draws: 5 standard errors fail with probability < 1e-6 per entry
    # (CLT; 2 + 16 entries here).
    se_den = dens.std(0) / math.sqrt(draws)
    assert torch.all((dens.mean(0) - den_ref).abs() < 5 * se_den)
    se_num = nums.std(0) / math.sqrt(draws)
    assert torch.all((nums.mean(0) - num_ref).abs() < 5 * se_num + 1e-12)


# ----- MagicPIG: deterministic pieces ------------------------------------------------------------
def test_mips_transform_matches_float64_reference():
    queries, keys, _ = qkv(2, 2, 2, 3, 20, 6, seed=7)
    mean = keys.double().mean(2, keepdim=True)
    big = (keys.double() - mean).norm(dim=-1).amax(-1)
    kt = mp.mips_keys(keys, mean.float(), big.float()).double()
    qt = mp.mips_queries(queries).double()
    kc = keys.double() - mean
    want_k = torch.cat([kc, torch.sqrt(big[..., None, None] ** 2 - kc.norm(dim=-1, keepdim=True) ** 2)], -1)
    want_k = want_k / big[..., None, None]
    torch.testing.assert_close(kt, want_k, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        kt.norm(dim=-1), torch.ones(2, 2, 20, dtype=torch.float64), rtol=1e-5, atol=1e-5
    )
    assert torch.all(qt[..., -1] == 0)
    cos = qt @ kt.transpose(-1, -2)
    want = (queries.double() @ kc.transpose(-1, -2)) / (
        queries.double().norm(dim=-1, keepdim=True) * big[..., None, None]
    )
    torch.testing.assert_close(cos, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits,tables", [(1, 1), (8, 75), (3, 10), (16, 300)])
def test_collision_probability_matches_float64_formula(bits, tables):
    cos = torch.linspace(-1, 1, 101, dtype=torch.float64)
    want = torch.tensor(
        [1 - (1 - (1 - math.acos(c) / math.pi) ** bits) ** tables for c in cos.tolist()], dtype=torch.float64
    )
    got = mp.collision_probability(cos.float(), bits, tables).double()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert float(got[-1]) == 1.0 and float(got[0]) == 0.0


def test_pack_codes_matches_python_bits():
    g = torch.Generator().manual_seed(2)
    proj = torch.randn(3, 4 * 5, generator=g)
    codes = mp.pack_codes(proj, tables=4, bits=5)
    for r in range(3):
        for t in range(4):
            bits = [int(proj[r, t * 5 + i] > 0) for i in range(5)]
            assert int(codes[r, t]) == sum(bit << i for i, bit in enumerate(bits))


def test_collisions_any_table():
    q = torch.tensor([[[[1, 2, 3]]]])
    k = torch.tensor([[[[0, 0, 3], [1, 0, 0], [4, 5, 6]]]])
    assert mp.collisions(q, k).tolist() == [[[[True, True, False]]]]


# ----- MagicPIG: statistics ---------------------------------------------------------------------
def test_magicpig_empirical_collision_frequency_matches_formula():
    queries, keys, values = qkv(1, 1, 1, 1, 24, 8, seed=8)
    queries = queries + 0.8 * keys[:, :, :1]  # a spread of angles, some small
    bits, tables, draws = 3, 2, 400
    hits = torch.zeros(24)
    prob = None
    attn = mg.compile(sampler_graph("magicpig", {"lsh_l": tables, "lsh_k": bits}, prior=False))
    torch.manual_seed(3)
    for _ in range(draws):
        p = attn.mask(queries, keys, values)[0, 0, 0]
        hits += (p > 0).float()
        kept_p = p[p > 0]
        prob = p if prob is None else torch.where(p > 0, p, prob)
        assert kept_p.numel() == 0 or float(kept_p.min()) > 0
    # every key collided at least once here, so prob holds the formula's p for each key
    assert torch.all(prob > 0)
    freq = hits / draws
    sd = torch.sqrt(prob * (1 - prob) / draws)
    # 24 binomial proportions, each within 4.5 sd + 1/draws: family-wise failure < 24·7e-6 ≈ 2e-4
    assert torch.all((freq - prob).abs() < 4.5 * sd + 1 / draws), (freq, prob)
    assert float(prob.max() - prob.min()) > 0.3  # the angles really differ


def test_magicpig_error_falls_as_tables_grow():
    queries, keys, values = qkv(1, 4, 2, 4, 300, 16, seed=9, scale=2.0, v_shift=0.5)
    ref = ref_dense(queries, keys, values)
    torch.manual_seed(4)
    errs = []
    for tables in (2, 12, 80):
        attn = mg.compile(sampler_graph("magicpig", {"lsh_l": tables, "lsh_k": 6}))
        errs.append(sum(float(rel_err(attn(queries, keys, values), ref).mean()) for _ in range(4)) / 4)
    # more tables = higher collision probability for every key = smaller variance; averaged over
    # 4 draws × 16 rows the expected ordering reverses with probability < 1e-4 (estimated from
    # the spread of single-draw errors).
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.15


def test_magicpig_is_unbiased_over_draws():
    queries, keys, values = qkv(1, 1, 1, 1, 120, 8, seed=10, scale=2.0, v_shift=0.5)
    attn = mg.compile(sampler_graph("magicpig", {"lsh_l": 6, "lsh_k": 4}, prior=False))
    torch.manual_seed(5)
    draws = 300
    nums, dens = zip(
        *(ht_sums(queries, keys, values, attn.mask(queries, keys, values)) for _ in range(draws))
    )
    nums, dens = torch.stack(nums), torch.stack(dens)
    num_ref, den_ref = dense_sums(queries, keys, values)
    # as for random sampling: 5 standard errors, < 1e-6 per entry (CLT).
    assert torch.all((dens.mean(0) - den_ref).abs() < 5 * dens.std(0) / math.sqrt(draws))
    assert torch.all((nums.mean(0) - num_ref).abs() < 5 * nums.std(0) / math.sqrt(draws) + 1e-12)


# ----- MagicPIG: State ------------------------------------------------------------------------
def test_magicpig_state_appends_and_rebuilds():
    params = {"lsh_l": 4, "lsh_k": 5, "seed": 3, "center": True}
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(1, 2, 30, 8, generator=g)
    values = torch.randn(1, 2, 30, 8, generator=g)
    slot: dict = {}
    mp.magicpig_prepare(keys[:, :, :20], values, params, slot, 0)
    mean0, norm0 = slot["mean"].clone(), slot["max_norm"].clone()
    planes0 = slot["planes"].clone()
    small = keys.clone()
    small[:, :, 20:] = mean0 + 0.01 * small[:, :, 20:]  # new keys well inside the max norm
    prep = mp.magicpig_prepare(small, values, params, slot, 0)
    assert torch.equal(slot["mean"], mean0) and torch.equal(slot["planes"], planes0)
    assert prep["codes"].shape == (1, 2, 30, 4)
    want = mp._encode(small, mean0, norm0, planes0, params)
    assert torch.equal(prep["codes"], want)  # one normalisation for cached and new keys
    # a longer new key forces a rebuild on all keys with the new mean and max norm
    big = torch.cat([small, 100 * torch.ones(1, 2, 1, 8)], dim=2)
    prep = mp.magicpig_prepare(big, values, params, slot, 0)
    torch.testing.assert_close(slot["mean"], big.mean(2, keepdim=True))
    assert torch.equal(prep["codes"], mp._encode(big, slot["mean"], slot["max_norm"], planes0, params))
    # a shrinking cache rebuilds
    prep = mp.magicpig_prepare(keys[:, :, :10], values, params, slot, 0)
    assert prep["codes"].shape[2] == 10
    torch.testing.assert_close(slot["mean"], keys[:, :, :10].mean(2, keepdim=True))
    # another layer draws other planes
    other: dict = {}
    mp.magicpig_prepare(keys, values, params, other, 1)
    assert not torch.equal(other["planes"], planes0)


def test_magicpig_rows_of_a_batch_refit_alone():
    """A new key outside one row's ball refits that row only: every row's State and mask are
    those of the row run alone (beam search moves rows between steps and drops some)."""
    params = {"lsh_l": 4, "lsh_k": 5, "seed": 3, "center": True}
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(3, 2, 21, 8, generator=g)
    keys[1, :, 20] = 100.0  # far outside row 1's ball; rows 0 and 2 fit theirs
    keys[:, :, 20] *= torch.tensor([0.01, 1.0, 0.01]).view(3, 1, 1)
    values = torch.randn(3, 2, 21, 8, generator=g)
    slot: dict = {}
    mp.magicpig_prepare(keys[:, :, :20], values, params, slot, 0)
    batch = mp.magicpig_prepare(keys, values, params, slot, 0)
    for row in range(3):
        alone: dict = {}
        mp.magicpig_prepare(keys[row : row + 1, :, :20], values, params, alone, 0)
        want = mp.magicpig_prepare(keys[row : row + 1], values, params, alone, 0)
        for name in ("codes", "mean", "max_norm"):
            assert torch.equal(batch[name][row : row + 1], want[name]), (row, name)
    torch.testing.assert_close(slot["mean"][1], keys[1].mean(1, keepdim=True))  # refitted
    assert torch.equal(slot["first"], keys[:, :, :1])

    ov = {"sink_size": 1, "window_size": 1, "seed": 1}
    attn = mg.compile(mg.load_graph("graphs/magicpig.yaml", overrides=ov))
    queries = torch.randn(3, 4, 1, 8, generator=g)

    def decode(rows):
        state = mg.State()
        attn.mask(queries[rows], keys[rows, :, :20], values[rows, :, :20], state=state)
        return attn.mask(queries[rows], keys[rows], values[rows], state=state)

    together = decode(slice(None))
    for row in range(3):
        alone = decode(slice(row, row + 1))
        assert torch.equal(together[row : row + 1] > 0, alone > 0), row  # the same keys sampled
        torch.testing.assert_close(together[row : row + 1], alone)


def test_magicpig_graph_state_per_layer_and_per_request():
    ov = {"sink_size": 2, "window_size": 2, "seed": 1}
    attn = mg.compile(mg.load_graph("graphs/magicpig.yaml", overrides=ov))
    queries, keys, values = qkv(1, 4, 2, 1, 40, 8, seed=12)

    def decode(state, layer):
        attn.mask(queries, keys[:, :, :39], values[:, :, :39], state=state, layer_idx=layer)
        return attn.mask(queries, keys, values, state=state, layer_idx=layer)

    state = mg.State()
    step = decode(state, 3)
    other_layer = decode(state, 4)
    assert sorted(state.keys()) == [(3, "lsh"), (4, "lsh")]
    assert state.slot(3, "lsh")["codes"].shape[2] == 40  # appended, not refitted
    assert not torch.equal(state.slot(3, "lsh")["planes"], state.slot(4, "lsh")["planes"])
    assert torch.equal(step, decode(mg.State(), 3))  # same seed, same history: same mask
    # 2·4·37 residual keys hashed with other planes: equal masks would be a coincidence
    assert not torch.equal(step, other_layer)
    state.reset()  # a new request starts clean
    assert torch.equal(
        attn.mask(queries, keys, values, state=state, layer_idx=3),
        attn.mask(queries, keys, values, state=mg.State(), layer_idx=3),
    )


# ----- vAttention -------------------------------------------------------------------------------
def test_z_score():
    for d in (0.01, 0.05, 0.2, 0.5):
        assert float(vattention.z_score(d)) == pytest.approx(NormalDist().inv_cdf(1 - d / 2), rel=1e-5)


def test_sample_probability_matches_float64_reference():
    b, hq, hkv, q, k, d = 1, 2, 1, 3, 40, 4
    g = torch.Generator().manual_seed(6)
    e = torch.rand(b, hq, q, k, generator=g) * (torch.rand(b, hq, q, k, generator=g) < 0.8)
    base = (torch.rand(b, hq, q, k, generator=g) < 0.3) & (e > 0)
    values = torch.randn(b, hkv, k, d, generator=g) + 0.3
    pnum = torch.randn(b, hq, q, d, generator=g)
    pden = torch.rand(b, hq, q, generator=g) * 3
    rate, eps, delta = 0.3, 0.1, 0.05
    z = NormalDist().inv_cdf(1 - delta / 2)
    for bound in ("output", "denominator"):
        got = vattention.sample_probability(e, base, rate, values, pnum, pden, eps, delta, bound)
        for h in range(hq):
            for i in range(q):
                idx = [j for j in range(k) if base[0, h, i, j]]
                ej = e[0, h, i].double()
                v = values[0, 0].double()
                den = float(pden[0, h, i]) + sum(float(ej[j]) / rate for j in idx)
                if bound == "denominator":
                    terms = [float(ej[j]) ** 2 for j in idx]
                    allowed = (eps * den / z) ** 2
                else:
                    num = pnum[0, h, i].double() + sum(ej[j] / rate * v[j] for j in idx)
                    o = num / den
                    terms = [float(ej[j]) ** 2 * float((v[j] - o).norm()) ** 2 for j in idx]
                    allowed = (eps * float(o.norm()) * den / z) ** 2
                # Horvitz–Thompson spread plus z standard errors of it
                spread = sum(t / rate for t in terms)
                spread += z * math.sqrt(sum((1 - rate) * t * t / rate**2 for t in terms))
                want = min(1.0, max(rate, spread / (spread + allowed)))
                assert float(got[0, h, i, 0]) == pytest.approx(want, rel=1e-4, abs=1e-6), (bound, h, i)


def _vatt_graph(prior_kind, **params):
    """vattention_sample behind an empty prior (difference(full, full)) or behind a sink."""
    if prior_kind == "empty":
        nodes = [
            {"name": "all", "op": "full"},
            {"name": "prior", "op": "difference", "inputs": {"a": "all", "b": "all"}},
        ]
    else:
        nodes = [{"name": "prior", "op": "sink", "params": {"size": 2}}]
    nodes += [
        {"name": "part", "op": "partial", "inputs": {"mask": "prior"}},
        {
            "name": "s",
            "op": "vattention_sample",
            "inputs": {"prior": "prior", "partial": "part"},
            "params": params,
        },
        {"name": "out", "op": "union", "inputs": {"masks": ["prior", "s"]}},
    ]
    return mg.load_graph({"graph": "t", "nodes": nodes, "output": "out"})


@pytest.mark.parametrize("prior_kind", ["empty", "sink"])
def test_vattention_full_base_rate_is_dense_without_double_counting(prior_kind):
    queries, keys, values = qkv(1, 4, 2, 3, 33, 8, seed=13)
    attn = mg.compile(_vatt_graph(prior_kind, base_rate_sampling=1.0, seed=0))
    p = attn.mask(queries, keys, values)
    assert torch.all(p == 1.0)
    torch.testing.assert_close(
        attn(queries, keys, values).double(), ref_dense(queries, keys, values), rtol=1e-5, atol=1e-5
    )


def test_vattention_prior_without_partial_is_rejected_by_validation():
    graph = {
        "graph": "t",
        "nodes": [
            {"name": "sink", "op": "sink", "params": {"size": 1}},
            {"name": "s", "op": "vattention_sample", "inputs": {"prior": "sink"}},
        ],
        "output": "s",
    }
    with pytest.raises(mg.WiringError, match="partial") as info:
        mg.load_graph(graph)
    assert (info.value.node, info.value.port) == ("s", "partial")


def test_vattention_offsets_bound_the_sampled_range():
    queries, keys, values = qkv(1, 2, 1, 4, 30, 4, seed=14)
    g = sampler_graph(
        "vattention_sample", {"base_rate_sampling": 1.0, "init_offset": 3, "local_offset": 5}, prior=False
    )
    p = mg.compile(g).mask(queries, keys, values)
    j = torch.arange(30)
    want = ((j >= 3) & (j < 30 - 5)).float().expand(4, 30)  # the reference's [init, K − local)
    assert torch.equal(p[0, 0], want)


def test_vattention_offset_shares_floor_like_every_size():
    """0.29 of K = 100 is 29 keys (env.size), not int(0.29 * 100) = 28."""
    queries, keys, values = qkv(1, 2, 1, 2, 100, 4, seed=16)
    g = sampler_graph(
        "vattention_sample",
        {"base_rate_sampling": 1.0, "init_offset": 0.29, "local_offset": 0.07},
        prior=False,
    )
    p = mg.compile(g).mask(queries, keys, values)
    j = torch.arange(100)
    want = ((j >= 29) & (j < 100 - 7)).float().expand(2, 100)
    assert torch.equal(p[0, 0], want)


@pytest.mark.parametrize("param,value", [("init_offset", 3.0), ("local_offset", 1.5), ("init_offset", -1)])
def test_vattention_bad_offsets_are_rejected_by_validation(param, value):
    with pytest.raises(mg.ParameterError, match="out of range") as info:
        sampler_graph("vattention_sample", {param: value}, prior=False)
    assert (info.value.node, info.value.param) == ("s", param)


@pytest.mark.parametrize(
    "op,ports",
    [
        ("random_sample", {"keys", "attention_mask"}),
        ("magicpig", {"queries", "keys", "attention_mask"}),
        ("vattention_sample", {"queries", "keys", "values", "attention_mask"}),
    ],
)
def test_samplers_declare_the_graph_inputs_they_read(op, ports):
    dot = sampler_graph(op, {}, prior=True).to_dot()
    for port in ports:
        assert f'"{port}" -> "s"' in dot, f"{op} drawn without its {port} input"


@pytest.mark.parametrize(
    "prior_kind,bound", [("sink", "output"), ("empty", "output"), ("sink", "denominator")]
)
def test_vattention_meets_epsilon_delta(prior_kind, bound):
    eps, delta = 0.1, 0.1
    queries, keys, values = qkv(2, 8, 2, 32, 600, 16, seed=15, scale=1.5, v_shift=1.0)
    attn = mg.compile(
        _vatt_graph(prior_kind, base_rate_sampling=0.1, epsilon=eps, delta=delta, bound=bound, seed=7)
    )
    ref = ref_dense(queries, keys, values)
    out = attn(queries, keys, values)
    rows = ref.shape[0] * ref.shape[1] * ref.shape[2]  # 512 rows
    if bound == "output":
        err = rel_err(out, ref)
    else:  # the denominator's relative error
        num, den = ht_sums(queries, keys, values, attn.mask(queries, keys, values))
        _, den_ref = dense_sums(queries, keys, values)
        err = (den - den_ref).abs() / den_ref
    share = float((err > eps).double().mean())
    # If each row failed with probability exactly δ, the share over 512 rows exceeds
    # δ + 4 sd (sd = sqrt(δ(1 − δ)/512) ≈ 0.013) with probability < 1e-4. Rows share keys, and
    # the budget is estimated from the base sample (a CLT bound, not exact), hence the
    # additive 0.02 stated as tolerance.
    assert share <= delta + 4 * math.sqrt(delta * (1 - delta) / rows) + 0.02, share
    density = float((attn.mask(queries, keys, values) > 0).double().mean())
    assert density < 0.9  # the bound does not degenerate into dense attention


def test_vattention_tighter_epsilon_means_more_keys():
    queries, keys, values = qkv(1, 4, 2, 8, 400, 16, seed=16, v_shift=1.0)
    dens = []
    for eps in (0.3, 0.1, 0.03):
        attn = mg.compile(_vatt_graph("sink", base_rate_sampling=0.1, epsilon=eps, delta=0.05, seed=2))
        dens.append(float((attn.mask(queries, keys, values) > 0).double().mean()))
    assert dens[0] < dens[1] < dens[2]


# ----- every graph: shapes, dtypes, tiny K ------------------------------------------------------
@pytest.mark.parametrize("name", GRAPHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("q,k", [(1, 50), (5, 50), (9, 9), (1, 3), (3, 3)])
def test_graphs_run_on_gqa_without_nan(name, dtype, q, k):
    graph = mg.load_graph(f"graphs/{name}.yaml", overrides={"sink_size": 1, "window_size": 2})
    attn = mg.compile(graph)
    queries, keys, values = qkv(2, 4, 2, q, k, 8, dtype=dtype, seed=q + k)
    am = torch.ones(1, 1, q, k, dtype=torch.bool).tril(diagonal=k - q)  # causal
    out = attn(queries, keys, values, attention_mask=am, state=mg.State())
    assert out.shape == (2, 4, q, 8) and out.dtype == dtype
    assert torch.isfinite(out.float()).all()
    p = attn.mask(queries, keys, values, attention_mask=am)
    assert torch.all((p >= 0) & (p <= 1))
    assert torch.all(p[~am.expand_as(p)] == 0)  # nothing beyond the causal boundary
    assert torch.all(p[..., 0] == 1.0)  # the sink


@pytest.mark.parametrize("name", GRAPHS)
def test_shipped_defaults_run_and_are_samplers(name):
    graph = mg.load_graph(f"graphs/{name}.yaml")
    queries, keys, values = qkv(1, 2, 1, 2, 300, 8)
    out = mg.compile(graph)(queries, keys, values)
    assert torch.isfinite(out).all()
    ops = {n.op for n in graph.nodes.values()}
    assert any(not mg.get_op(o).deterministic for o in ops)


@pytest.mark.slow
def test_inductor_matches_eager_with_a_seed():
    for name in ("vattention", "magicpig"):
        ov = {"sink_size": 2, "window_size": 4, "seed": 5}
        eager = mg.compile(mg.load_graph(f"graphs/{name}.yaml", overrides=ov))
        ind = mg.compile(mg.load_graph(f"graphs/{name}.yaml", overrides=ov), backend="inductor")
        for k in (40, 47):
            queries, keys, values = qkv(1, 4, 2, 2, k, 8, seed=k)
            pe, pi = eager.mask(queries, keys, values), ind.mask(queries, keys, values)
            assert torch.equal(pe > 0, pi > 0)
            torch.testing.assert_close(pe, pi, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(
                eager(queries, keys, values), ind(queries, keys, values), rtol=1e-4, atol=1e-5
            )


def _doc_block(path, heading):
    """The first ```yaml block after ``heading`` in a docs page."""
    text = open(path, encoding="utf-8").read()
    after = text[text.index(heading) :]
    start = after.index("```yaml\n") + len("```yaml\n")
    return after[start : after.index("```", start)]


def test_docs_example_puts_vattention_behind_quest():
    if "quest" not in mg.all_ops():
        pytest.skip("the quest operator is not available")
    text = _doc_block("docs/methods/vattention.md", "## Swapping the selector")
    graph = mg.load_graph(text, overrides={"sink_size": 2, "window_size": 4, "page_size": 4, "seed": 0})
    assert {n.op for n in graph.nodes.values()} >= {"quest", "topk_pages", "partial", "vattention_sample"}
    queries, keys, values = qkv(1, 4, 2, 2, 70, 8, seed=17)
    attn = mg.compile(graph)
    out = attn(queries, keys, values, state=mg.State())
    assert torch.isfinite(out).all()
    p = attn.mask(queries, keys, values, state=mg.State())
    assert torch.any((p > 0) & (p < 1))  # the sampler adds weighted keys behind Quest's pages


@pytest.mark.parametrize("name", GRAPHS)
def test_docs_yaml_equals_shipped_graph(name):
    doc = mg.load_graph(_doc_block(f"docs/methods/{name}.md", "## YAML"))
    shipped = mg.load_graph(f"graphs/{name}.yaml")
    assert (doc.nodes, doc.params, doc.output) == (shipped.nodes, shipped.params, shipped.output)


def test_vattention_int_base_rate_is_a_count_of_residual_keys():
    queries, keys, values = qkv(1, 2, 1, 2, 40, 4, seed=18)
    g = sampler_graph("vattention_sample", {"base_rate_sampling": 8, "epsilon": 0.9, "seed": 3}, prior=False)
    p = mg.compile(g).mask(queries, keys, values)
    kept = p[p > 0]
    # every kept key has p ≥ 8/40 (the base rate as a share of the 40 residual keys)
    assert float(kept.min()) >= 8 / 40 - 1e-6
    # each row holds one value of p
    for row in p.reshape(-1, 40):
        assert torch.unique(row[row > 0]).numel() == 1
