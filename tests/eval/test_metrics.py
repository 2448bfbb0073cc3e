"""Micro metrics against hand-computed values and a plain float64 reference; summaries; sweep."""

from __future__ import annotations

import math

import pytest
import torch

import maskgraph as mg
from maskgraph.errors import MaskgraphError
from maskgraph.eval.metrics import MicroObserver, call_metrics, summarise
from maskgraph.eval.sweep import sweep_overrides


def test_hand_computed_one_query():
    # one head, one query, three keys; logits 0, ln 2, ln 3 -> softmax 1/6, 2/6, 3/6
    d = 1
    q = torch.ones(1, 1, 1, d)
    k = torch.tensor([0.0, math.log(2), math.log(3)]).view(1, 1, 3, d)
    v = torch.tensor([1.0, 2.0, 4.0]).view(1, 1, 3, d)
    mask = torch.tensor([0.0, 1.0, 1.0]).view(1, 1, 1, 3)  # keys 1 and 2 kept
    out = torch.tensor([(2 * 2 + 3 * 4) / 5]).view(1, 1, 1, 1)  # exact attention over kept keys
    m = call_metrics(q, k, v, None, 1.0, mask, out)
    dense = (1 * 1 + 2 * 2 + 3 * 4) / 6
    assert m["density"] == pytest.approx([2 / 3])
    assert m["recall"] == pytest.approx([5 / 6])
    assert m["rel_err"] == pytest.approx([abs(16 / 5 - dense) / dense])


def test_attention_mask_limits_allowed_keys():
    q = torch.zeros(1, 1, 2, 1)
    k = torch.zeros(1, 1, 4, 1)
    v = torch.arange(4.0).view(1, 1, 4, 1)
    causal = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool).view(1, 1, 2, 4)
    mask = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 1, 1, 4)
    m = call_metrics(q, k, v, causal, 1.0, mask, None)
    # query 0 may see 3 keys and keeps 1 (key 3 is not allowed); query 1 keeps 2 of 4
    assert m["density"] == pytest.approx([(1 / 3 + 2 / 4) / 2])
    assert "rel_err" not in m


def _reference64(q, k, v, am, scaling, mask, out):
    b, hq, nq, d = q.shape
    g = hq // k.shape[1]
    dens, rec, err = [], [], []
    for h in range(hq):
        kk, vv = k[:, h // g].double(), v[:, h // g].double()
        s = q[:, h].double() @ kk.transpose(-1, -2) * scaling + am[:, 0].double()
        w = torch.softmax(s, -1)
        o = w @ vv
        allowed = am[:, 0] > float("-inf")
        sel = (mask[:, h] > 0) & allowed
        dens.append((sel.sum(-1).double() / allowed.sum(-1)).mean().item())
        rec.append(torch.where(sel, w, 0.0).sum(-1).mean().item())
        err.append(((out[:, h].double() - o).norm() / o.norm()).item())
    return dens, rec, err


@pytest.mark.parametrize(
    "hq,hkv,nq,nk,dtype",
    [
        (4, 2, 1, 7, torch.float32),
        (6, 2, 5, 13, torch.float32),
        (4, 1, 9, 9, torch.float32),
        (4, 2, 3, 11, torch.bfloat16),
    ],
)
def test_against_float64_reference(hq, hkv, nq, nk, dtype):
    gen = torch.Generator().manual_seed(hq * 100 + nk)
    q = torch.randn(2, hq, nq, 8, generator=gen).to(dtype)
    k = torch.randn(2, hkv, nk, 8, generator=gen).to(dtype)
    v = torch.randn(2, hkv, nk, 8, generator=gen).to(dtype)
    i = torch.arange(nk - nq, nk).view(-1, 1)
    am = torch.zeros(2, 1, nq, nk).masked_fill(torch.arange(nk).view(1, -1) > i, float("-inf"))
    mask = (torch.rand(2, hq, nq, nk, generator=gen) > 0.5).float()
    mask[..., 0] = 1.0
    out = torch.randn(2, hq, nq, 8, generator=gen).to(dtype)
    m = call_metrics(q, k, v, am, 0.3, mask, out)
    dens, rec, err = _reference64(q, k, v, am, 0.3, mask, out)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    assert m["density"] == pytest.approx(dens, abs=1e-6)
    assert m["recall"] == pytest.approx(rec, abs=tol)
    assert m["rel_err"] == pytest.approx(err, rel=tol)


def test_observer_on_a_graph_dense_is_exact():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, 4, 3, 8, generator=gen),
        torch.randn(1, 2, 10, 8, generator=gen),
        torch.randn(1, 2, 10, 8, generator=gen),
    )
    for name, want_density in (("dense", 1.0), ("streaming_llm", None)):
        g = (
            mg.load_graph(name)
            if name == "dense"
            else mg.load_graph(name, overrides={"sink_size": 1, "window_size": 2})
        )
        attn = mg.compile(g)
        am = torch.ones(1, 1, 3, 10, dtype=torch.bool).tril(diagonal=7)
        out = attn(q, k, v, am)
        obs = MicroObserver(dense=True, tags={"cell": name})
        obs.observe(0, q, k, v, am, 8**-0.5, out, attn)
        rec = obs.records[0]
        assert rec["cell"] == name and rec["Q"] == 3 and rec["K"] == 10
        if want_density:
            assert rec["density"] == pytest.approx([1.0] * 4)
            assert max(rec["rel_err"]) < 1e-5 and min(rec["recall"]) > 1 - 1e-5
        else:  # keys 0, t-1, t of allowed t+1 keys: positions 7, 8, 9
            assert rec["density"] == pytest.approx([sum(3 / (t + 1) for t in (7, 8, 9)) / 3] * 4)
            assert min(rec["rel_err"]) > 1e-3 and max(rec["recall"]) < 1


def test_summarise_weights_by_queries():
    recs = [
        {"layer": 0, "Q": 1, "density": [0.2, 0.4], "rel_err": [0.1, 0.1]},
        {"layer": 0, "Q": 3, "density": [0.6, 0.8], "rel_err": [0.3, 0.3]},
        {"layer": 1, "Q": 2, "density": [1.0, 1.0]},
    ]
    s = summarise(recs)
    assert s["calls"] == 3
    assert s["per_head"][0]["density"] == pytest.approx([0.5, 0.7])
    assert s["per_layer"][0]["density"] == pytest.approx(0.6)
    assert s["per_layer"][0]["rel_err"] == pytest.approx(0.25)
    assert s["overall"]["density"] == pytest.approx(0.8)
    assert s["overall"]["rel_err"] == pytest.approx(0.25)  # layer 1 has none


def test_sweep_rule():
    topk = {"sink_size": 128, "window_size": 128, "heavy_size": 0.1}
    o = sweep_overrides(topk, 0.1, 1000)
    assert o == {"sink_size": 25, "window_size": 25, "heavy_size": 0.05}
    o = sweep_overrides(topk, 0.5, 4000)  # fixed part capped at 256
    assert o["sink_size"] + o["window_size"] == 256 and o["heavy_size"] == pytest.approx(0.5 - 256 / 4000)
    s = sweep_overrides({"sink_size": 128, "window_size": 128}, 0.2, 1000)
    assert s == {"sink_size": 100, "window_size": 100}
    r = sweep_overrides({"sink_size": 1, "window_size": 1, "sampling_rate": 0.1}, 0.2, 1000)
    assert r["sampling_rate"] == pytest.approx(0.1)
    va = sweep_overrides(
        {"sink_size": 1, "window_size": 1, "heavy_size": 0.1, "base_rate_sampling": 0.1}, 0.2, 1000
    )
    assert va["heavy_size"] == va["base_rate_sampling"] == pytest.approx(0.05)
    assert sweep_overrides({"sink_size": 1, "window_size": 1, "top_p": 0.9}, 0.05, 1000)["top_p"] == 0.7
    assert sweep_overrides({}, 0.1, 1000) == {}
    with pytest.raises(MaskgraphError):
        sweep_overrides(topk, 0.0, 1000)


def test_summarise_reports_decode_steps_apart():
    """decode_density and decode_cache average the calls of one query only."""
    records = [
        {"layer": 0, "Q": 20, "K": 100, "density": [1.0, 1.0], "cache": [1.0, 1.0]},
        {"layer": 0, "Q": 1, "K": 101, "density": [0.1, 0.3], "cache": [0.2, 0.2]},
        {"layer": 1, "Q": 1, "K": 101, "density": [0.4, 0.4], "cache": [0.4, 0.6]},
    ]
    overall = summarise(records)["overall"]
    assert overall["decode_density"] == pytest.approx(0.3)
    assert overall["decode_cache"] == pytest.approx(0.35)
    assert overall["density"] == pytest.approx((20 / 21 + 0.2 / 21 + 0.4) / 2)
    assert "decode_density" not in summarise(records[:1])["overall"]
