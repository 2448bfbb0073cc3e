"""PQCache product-quantised scores against float64 references."""

from __future__ import annotations

import pytest
import torch

import maskgraph as mg
from maskgraph.env import Env
from maskgraph.ops.zoo.pq import kmeans

D = 8


def params(**kw):
    out = dict(pq_group_factor=2, pq_bits=3, kmeans_iter=4, metric="euclidean", seed=0)
    out.update(kw)
    return out


def make(b, hq, hkv, q, k, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, hq, q, D, generator=gen).to(dtype),
        torch.randn(b, hkv, k, D, generator=gen).to(dtype),
    )


def pq_scores(queries, keys, p, slot=None):
    spec = mg.get_op("pq")
    prep = spec.prepare(keys, keys, p, {} if slot is None else slot, 0)
    k = keys.shape[2]
    env = Env(queries, keys, keys, None, D**-0.5, torch.arange(k - queries.shape[2], k))
    return spec.fn(env, **p, prep=prep), prep


def reference_scores(queries, centroids, codes):
    """float64 scaling·Σ_s <q_s, centroid_s[code_s]>, one key at a time."""
    b, hq, nq, _ = queries.shape
    _, hkv, m, _, ds = centroids.shape
    nk = codes.shape[2]
    out = torch.empty(b, hq, nq, nk, dtype=torch.float64)
    for i in range(b):
        for h in range(hq):
            kv = h // (hq // hkv)
            for j in range(nk):
                approx = torch.cat([centroids[i, kv, s, codes[i, kv, j, s]] for s in range(m)]).double()
                out[i, h, :, j] = queries[i, h].double() @ approx * D**-0.5
    return out


def nearest(x, centroids, metric):
    """float64 nearest centroid of each row: x (n, ds), centroids (C, ds) -> (n,)."""
    x, c = x.double(), centroids.double()
    if metric == "ip":
        return (x @ c.T).argmax(-1)
    return torch.cdist(x, c).argmin(-1)


@pytest.mark.parametrize("b,hq,hkv,q,k", [(1, 4, 2, 1, 37), (2, 6, 2, 4, 29), (1, 2, 1, 11, 11)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scores_match_float64_reference(b, hq, hkv, q, k, dtype):
    queries, keys = make(b, hq, hkv, q, k, dtype, seed=k)
    got, prep = pq_scores(queries, keys, params())
    assert prep["codes"].dtype == torch.int64 and prep["codes"].shape == (b, hkv, k, 2)
    want = reference_scores(queries, prep["centroids"], prep["codes"])
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,bits", [(16, 4), (13, 4), (8, 3)])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_as_many_centroids_as_keys_gives_exact_scores(k, bits, groups):
    queries, keys = make(1, 4, 2, 3, k, seed=k + groups)
    got, _ = pq_scores(queries, keys, params(pq_group_factor=groups, pq_bits=bits))
    exact = torch.einsum("bhqd,bhkd->bhqk", queries.double(), keys.double().repeat_interleave(2, 1))
    torch.testing.assert_close(got.double(), exact * D**-0.5, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", ["euclidean", "ip"])
def test_codes_are_the_nearest_centroids(metric):
    queries, keys = make(1, 2, 2, 1, 60, seed=4)
    _, prep = pq_scores(queries, keys, params(metric=metric, pq_bits=4, kmeans_iter=3))
    cent, codes = prep["centroids"], prep["codes"]
    for h in range(2):
        for s in range(2):
            sub = keys[0, h, :, s * 4 : (s + 1) * 4]
            assert torch.equal(codes[0, h, :, s], nearest(sub, cent[0, h, s], metric))


def test_codes_exact_above_8_bits():
    """2**9 centroids: codes above 255 survive (the reference rounds them through bf16)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 600, 2, generator=gen)
    cent, codes = kmeans(x, 512, 2, "euclidean", seed=1)
    assert codes.dtype == torch.int64 and codes.max() > 300
    assert torch.equal(codes[0], nearest(x[0], cent[0], "euclidean"))


def test_kmeans_lowers_distortion_and_keeps_means():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 200, 4, generator=gen)
    distortion = []
    for iters in (0, 1, 5):
        cent, codes = kmeans(x, 8, iters, "euclidean", seed=0)
        distortion.append(((x - torch.gather(cent, 1, codes.unsqueeze(-1).expand(-1, -1, 4))) ** 2).sum())
    assert distortion[0] > distortion[1] >= distortion[2] - 1e-4
    # After a Lloyd step, every non-empty centroid is the mean of the points assigned before it.
    c1, _ = kmeans(x, 8, 1, "euclidean", seed=0)
    c0, codes0 = kmeans(x, 8, 0, "euclidean", seed=0)
    for c in range(8):
        members = x[0][codes0[0] == c]
        if len(members):
            torch.testing.assert_close(c1[0, c], members.double().mean(0).float(), rtol=1e-5, atol=1e-5)


def test_deterministic_given_seed():
    queries, keys = make(1, 4, 2, 2, 40, seed=9)
    a = pq_scores(queries, keys, params(seed=5))[1]
    b = pq_scores(queries, keys, params(seed=5))[1]
    c = pq_scores(queries, keys, params(seed=6))[1]
    assert torch.equal(a["centroids"], b["centroids"]) and torch.equal(a["codes"], b["codes"])
    assert not torch.equal(a["centroids"], c["centroids"])


def test_new_keys_encoded_with_existing_codebooks():
    queries, keys = make(1, 4, 2, 1, 50, seed=2)
    slot: dict = {}
    _, first = pq_scores(queries, keys[:, :, :30], params(), slot)
    _, grown = pq_scores(queries, keys, params(), slot)
    assert slot["updated"] == (30, 50)
    assert torch.equal(grown["centroids"], first["centroids"])
    assert torch.equal(grown["codes"][:, :, :30], first["codes"])
    for h in range(2):
        for s in range(2):
            sub = keys[0, h, 30:, s * 4 : (s + 1) * 4]
            assert torch.equal(
                grown["codes"][0, h, 30:, s], nearest(sub, grown["centroids"][0, h, s], "euclidean")
            )
    # Changing a parameter refits.
    pq_scores(queries, keys, params(pq_bits=2), slot)
    assert slot["updated"] == (0, 50) and slot["centroids"].shape[3] == 4


def test_group_factor_must_divide_head_dim():
    queries, keys = make(1, 2, 1, 1, 10)
    with pytest.raises(mg.ShapeError, match="pq_group_factor=3"):
        pq_scores(queries, keys, params(pq_group_factor=3))


def test_cluster_sums_match_float64_and_ignore_the_order():
    """The fixed-point cluster sums equal float64 sums up to their float32 rounding (half an
    ulp) and the fixed point's (2**-43 of the row's largest entry per point), empty clusters
    are zero, and any order of the points gives the same bits — what
    float atomics on a GPU cannot promise (a float scatter-add in another order differs here
    too, which the second half checks)."""
    from maskgraph.ops.zoo.pq import cluster_sums, fixed_point_scale

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, 3001, 5, generator=gen) * torch.tensor([1e-3, 1.0, 300.0]).view(3, 1, 1)
    x[1, :, 2] += 1e4  # a large common offset in one channel
    codes = torch.randint(0, 12, (3, 3001), generator=gen)
    codes[codes == 7] = 3  # cluster 7 stays empty
    scale = fixed_point_scale(x)
    sums = cluster_sums(x, codes, 12, scale)
    want = torch.zeros(3, 12, 5, dtype=torch.float64)
    for r in range(3):
        for i in range(3001):
            want[r, codes[r, i]] += x[r, i].double()
    top = x.abs().amax(dim=(1, 2)).double().view(3, 1, 1)
    allowed = want.abs() * 2.0**-24 + 3001 * 2.0**-43 * top
    assert ((sums.double() - want).abs() <= allowed).all()
    assert (sums[:, 7] == 0).all()
    perm = torch.randperm(3001, generator=gen)
    assert torch.equal(cluster_sums(x[:, perm], codes[:, perm], 12, scale), sums)
    plain = torch.zeros(3, 12, 5).scatter_add_(1, codes.unsqueeze(-1).expand(-1, -1, 5), x)
    shuffled = torch.zeros(3, 12, 5).scatter_add_(
        1, codes[:, perm].unsqueeze(-1).expand(-1, -1, 5), x[:, perm]
    )
    assert not torch.equal(plain, shuffled)  # float sums depend on the order


def test_kmeans_refuses_keys_that_are_not_finite():
    x = torch.randn(1, 50, 2)
    x[0, 3, 1] = float("nan")
    with pytest.raises(ValueError, match="inf or NaN"):
        kmeans(x, 4, 2, "euclidean", seed=0)
