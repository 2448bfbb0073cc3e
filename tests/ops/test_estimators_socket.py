"""SOCKET soft-LSH scores against a float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

import maskgraph as mg
from maskgraph.env import Env
from maskgraph.ops.zoo.socket import hyperplanes

D = 8


def make(b, hq, hkv, q, k, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, hq, q, D, generator=gen).to(dtype),
        torch.randn(b, hkv, k, D, generator=gen).to(dtype),
        (torch.randn(b, hkv, k, D, generator=gen) * torch.rand(b, hkv, k, 1, generator=gen)).to(dtype),
    )


def socket_scores(queries, keys, values, tables=3, bits=4, tau=0.5, seed=0, slot=None):
    spec = mg.get_op("socket")
    p = {"tables": tables, "bits": bits, "tau": tau, "seed": seed}
    prep = spec.prepare(keys, values, p, {} if slot is None else slot, 0)
    k = keys.shape[2]
    env = Env(queries, keys, values, None, D**-0.5, torch.arange(k - queries.shape[2], k))
    return spec.fn(env, **p, prep=prep)


def reference_scores(queries, keys, values, tables, bits, tau, seed):
    """float64, one (query, key) pair at a time: ‖v‖ · mean over tables of
    Π_p sigmoid(±<q/‖q‖, r_p>/tau), + where the key lies on the plane's positive side."""
    planes = hyperplanes(tables, bits, D, seed).double()
    b, hq, nq, _ = queries.shape
    hkv, nk = keys.shape[1], keys.shape[2]
    out = torch.empty(b, hq, nq, nk, dtype=torch.float64)
    for i in range(b):
        for h in range(hq):
            kv = h // (hq // hkv)
            for t in range(nq):
                qv = queries[i, h, t].double()
                qv = qv / qv.norm()
                for j in range(nk):
                    kj = keys[i, kv, j].double()
                    total = 0.0
                    for table in range(tables):
                        prob = 1.0
                        for p in range(bits):
                            sign = 1.0 if float(kj @ planes[table, p]) > 0 else -1.0
                            prob *= 1 / (1 + math.exp(-sign * float(qv @ planes[table, p]) / tau))
                        total += prob
                    out[i, h, t, j] = total / tables * float(values[i, kv, j].double().norm())
    return out


@pytest.mark.parametrize("b,hq,hkv,q,k", [(1, 4, 2, 1, 23), (2, 6, 2, 3, 11), (1, 2, 1, 7, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_scores_match_float64_reference(b, hq, hkv, q, k, dtype, tau):
    queries, keys, values = make(b, hq, hkv, q, k, dtype, seed=k)
    got = socket_scores(queries, keys, values, tau=tau, seed=k)
    want = reference_scores(queries, keys, values, 3, 4, tau, k)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)


def test_bucket_probabilities_sum_to_one():
    """Over all 2**bits buckets a query's soft-hash probabilities sum to 1 per table: with one
    key per bucket (unit values), the scores sum to 1."""
    planes = hyperplanes(1, 3, D, 0)
    # Keys on the chosen sides of the 3 planes: solve for one key per sign pattern.
    patterns = torch.tensor([[(c >> p) & 1 for p in range(3)] for c in range(8)]).float() * 2 - 1
    keys = torch.linalg.lstsq(planes[0], patterns.T).solution.T  # (8, D): planes·k = ±1
    values = torch.nn.functional.normalize(torch.randn(8, D), dim=-1)
    queries = torch.randn(1, 2, 5, D)
    got = socket_scores(queries, keys.view(1, 1, 8, D), values.view(1, 1, 8, D), tables=1, bits=3, seed=0)
    torch.testing.assert_close(got.sum(-1), torch.ones(1, 2, 5), rtol=1e-5, atol=1e-5)


def test_cold_temperature_ranks_like_hard_collisions():
    """As tau → 0 a key's score tends to ‖v‖ · (share of tables where q and k share the bucket)."""
    queries, keys, values = make(1, 2, 1, 2, 30, seed=3)
    got = socket_scores(queries, keys, values, tables=6, bits=2, tau=1e-4, seed=4)
    planes = hyperplanes(6, 2, D, 4)
    qs = torch.einsum("hqd,lpd->hqlp", queries[0], planes) > 0
    ks = torch.einsum("kd,lpd->klp", keys[0, 0], planes) > 0
    same = (qs[:, :, None] == ks[None, None]).all(-1).double().mean(-1)  # (h, q, k)
    want = same * values[0, 0].double().norm(dim=-1)
    torch.testing.assert_close(got[0].double(), want, rtol=1e-3, atol=1e-3)


def test_seed_fixes_the_planes():
    queries, keys, values = make(1, 2, 1, 1, 20)
    a = socket_scores(queries, keys, values, seed=1)
    assert torch.equal(a, socket_scores(queries, keys, values, seed=1))
    assert not torch.equal(a, socket_scores(queries, keys, values, seed=2))
