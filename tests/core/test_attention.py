"""The attention estimator of docs/concepts.md against a plain float64 reference.

The reference loops over heads and reads KV head h // G explicitly, so it checks the GQA
reshape of the implementation instead of repeating it.
"""

from __future__ import annotations

import math

import pytest
import torch

import maskgraph as mg
from maskgraph.attention import attend, gqa_logits


def reference(q, k, v, probs=None, attention_mask=None, scaling=None, sinks=None):
    """float64 Σ(e/p)v / Σ(e/p) over keys with p > 0; zeros for empty rows.

    q (B,Hq,Q,D), k/v (B,Hkv,K,D), probs broadcastable to (B,Hq,Q,K) or None (all ones),
    attention_mask additive broadcastable to (B,Hq,Q,K), sinks (Hq,).
    """
    b, hq, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    g = hq // hkv
    scaling = d**-0.5 if scaling is None else scaling
    p = (
        torch.ones(b, hq, nq, nk, dtype=torch.float64)
        if probs is None
        else probs.double().expand(b, hq, nq, nk)
    )
    am = None if attention_mask is None else attention_mask.double().expand(b, hq, nq, nk)
    out = torch.zeros(b, hq, nq, d, dtype=torch.float64)
    for bi in range(b):
        for h in range(hq):
            kh, vh = k[bi, h // g].double(), v[bi, h // g].double()
            for i in range(nq):
                s = scaling * (kh @ q[bi, h, i].double())
                if am is not None:
                    s = s + am[bi, h, i]
                keep = (p[bi, h, i] > 0) & torch.isfinite(s)
                if not keep.any():
                    continue
                m = s[keep].max()
                if sinks is not None:
                    m = torch.maximum(m, sinks[h].double())
                w = torch.where(keep, torch.exp(s - m) / p[bi, h, i].clamp_min(1e-300), 0.0)
                den = w.sum() + (torch.exp(sinks[h].double() - m) if sinks is not None else 0.0)
                out[bi, h, i] = (w @ vh) / den
    return out


def causal_additive(nq, nk):
    """(1,1,Q,K) additive causal mask: query i at position K−Q+i sees keys j ≤ K−Q+i."""
    t = torch.arange(nk - nq, nk).view(-1, 1)
    j = torch.arange(nk).view(1, -1)
    return torch.zeros(nq, nk).masked_fill(j > t, float("-inf")).view(1, 1, nq, nk)


def qkv(b, hq, hkv, nq, nk, d, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, nq, d, generator=gen).to(dtype)
    k = torch.randn(b, hkv, nk, d, generator=gen).to(dtype)
    v = torch.randn(b, hkv, nk, d, generator=gen).to(dtype)
    return q, k, v


SHAPES = [
    # b, hq, hkv, Q, K, d
    (1, 2, 2, 1, 7, 8),  # Q = 1 (decode), no GQA
    (2, 4, 2, 3, 11, 16),  # B > 1, GQA G=2, Q < K, K odd
    (1, 6, 2, 13, 13, 8),  # Q = K (prefill), G=3
    (2, 8, 1, 5, 37, 4),  # multi-query (Hkv=1)
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("causal", [False, True])
def test_dense_graph_is_softmax_attention(shape, causal):
    q, k, v = qkv(*shape)
    am = causal_additive(shape[3], shape[4]) if causal else None
    attn = mg.compile(mg.load_graph("dense"))
    out = attn(q, k, v, attention_mask=am)
    assert out.shape == q.shape and out.dtype == q.dtype
    torch.testing.assert_close(out.double(), reference(q, k, v, attention_mask=am), atol=1e-5, rtol=1e-5)
    assert int(attn.empty_rows) == 0


def test_dense_matches_torch_sdpa_with_gqa():
    q, k, v = qkv(2, 4, 2, 5, 9, 8)
    out = mg.compile("dense")(q, k, v, attention_mask=causal_additive(5, 9))
    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    ref = torch.nn.functional.scaled_dot_product_attention(q, kk, vv, attn_mask=causal_additive(5, 9))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_dense_bf16_output_dtype_and_accuracy():
    q, k, v = qkv(1, 4, 2, 6, 19, 16, dtype=torch.bfloat16)
    out = mg.compile("dense")(q, k, v, attention_mask=causal_additive(6, 19))
    assert out.dtype == torch.bfloat16
    ref = reference(q, k, v, attention_mask=causal_additive(6, 19))
    # f32 accumulation, one bf16 rounding of the output: error ≤ 2^-8 relative.
    torch.testing.assert_close(out.double(), ref, atol=1e-2, rtol=8e-3)


def test_explicit_scaling_is_used():
    q, k, v = qkv(1, 2, 1, 2, 5, 4)
    out = mg.compile("dense")(q, k, v, scaling=0.3)
    torch.testing.assert_close(out.double(), reference(q, k, v, scaling=0.3), atol=1e-5, rtol=1e-5)


def test_attention_mask_wider_than_k_is_sliced():
    q, k, v = qkv(1, 2, 1, 3, 6, 4)
    wide = torch.randn(1, 1, 3, 10)
    wide[..., 2] = float("-inf")
    out = mg.compile("dense")(q, k, v, attention_mask=wide)
    torch.testing.assert_close(
        out.double(), reference(q, k, v, attention_mask=wide[..., :6]), atol=1e-5, rtol=1e-5
    )


def test_bool_attention_mask_means_keep():
    q, k, v = qkv(2, 4, 2, 3, 8, 4)
    keep = torch.rand(2, 1, 3, 8, generator=torch.Generator().manual_seed(3)) > 0.4
    keep[..., 0] = True
    additive = torch.zeros(keep.shape).masked_fill(~keep, float("-inf"))
    out = mg.compile("dense")(q, k, v, attention_mask=keep)
    torch.testing.assert_close(
        out.double(), reference(q, k, v, attention_mask=additive), atol=1e-5, rtol=1e-5
    )


def test_estimator_with_probabilities_below_one():
    """out = Σ(e/p)v / Σ(e/p) over p > 0, written out directly for one head."""
    q, k, v = qkv(1, 2, 1, 1, 6, 4, seed=5)
    p = torch.tensor([1.0, 0.5, 0.0, 0.25, 1.0, 0.1]).view(1, 1, 1, 6)
    logits = gqa_logits(q, k, 4**-0.5)
    out, empty = attend(logits, p, v)
    s = (q[0, 0, 0].double() @ k[0, 0].double().T) * 0.5
    e = torch.exp(s - s.max())
    pp = p.view(6).double()
    w = torch.where(pp > 0, e / pp.clamp_min(1e-300), 0.0)
    manual = (w @ v[0, 0].double()) / w.sum()
    torch.testing.assert_close(out[0, 0, 0].double(), manual, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.double(), reference(q, k, v, probs=p), atol=1e-6, rtol=1e-6)
    assert int(empty) == 0


def test_estimator_random_probabilities_gqa():
    q, k, v = qkv(2, 6, 3, 4, 15, 8, seed=7)
    gen = torch.Generator().manual_seed(8)
    p = torch.rand(2, 6, 4, 15, generator=gen)
    p = torch.where(p < 0.3, torch.zeros_like(p), p)
    out, _ = attend(gqa_logits(q, k, 8**-0.5), p, v)
    torch.testing.assert_close(out.double(), reference(q, k, v, probs=p), atol=1e-5, rtol=1e-5)


def test_per_head_sink_logits():
    q, k, v = qkv(2, 4, 2, 3, 9, 8, seed=9)
    sinks = torch.tensor([0.5, -1.0, 3.0, 10.0])
    attn = mg.compile("dense")
    out = attn(q, k, v, attention_mask=causal_additive(3, 9), sinks=sinks)
    ref = reference(q, k, v, attention_mask=causal_additive(3, 9), sinks=sinks)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    # A huge sink logit takes (almost) all the mass: the output shrinks towards zero.
    assert out[:, 3].abs().max() < out[:, 0].abs().max()


def test_empty_rows_return_zeros_and_are_counted():
    q, k, v = qkv(1, 2, 1, 3, 5, 4)
    am = torch.zeros(1, 1, 3, 5)
    am[0, 0, 1] = float("-inf")  # query 1 may see no key at all
    attn = mg.compile("dense")
    out = attn(q, k, v, attention_mask=am)
    assert not torch.isnan(out).any()
    assert torch.equal(out[:, :, 1], torch.zeros_like(out[:, :, 1]))
    assert int(attn.empty_rows) == 2  # one row per query head
    attn(q, k, v, attention_mask=am)
    assert int(attn.empty_rows) == 4  # counts accumulate over calls


def test_empty_rows_with_sinks_are_zero_not_nan():
    q, k, v = qkv(1, 2, 1, 1, 4, 4)
    mask = torch.zeros(1, 1, 1, 4)
    out, empty = attend(gqa_logits(q, k, 0.5), mask, v, sinks=torch.tensor([1.0, 2.0]))
    assert torch.equal(out, torch.zeros_like(out)) and int(empty) == 2


def test_huge_logits_do_not_overflow():
    q, k, v = qkv(1, 2, 1, 2, 6, 4)
    out = mg.compile("dense")(q * 1e4, k, v)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), reference(q * 1e4, k, v), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_query_chunking_gives_same_output(chunk):
    q, k, v = qkv(1, 4, 2, 7, 12, 8)
    am = causal_additive(7, 12)
    g = mg.load_graph("oracle_topk", overrides={"sink_size": 2, "window_size": 3, "heavy_size": 3})
    whole = mg.compile(g, chunk_size=64)
    part = mg.compile(g, chunk_size=chunk)
    torch.testing.assert_close(part(q, k, v, am), whole(q, k, v, am))
    torch.testing.assert_close(part.mask(q, k, v, am), whole.mask(q, k, v, am))


def test_graph_output_equals_reference_over_its_own_mask():
    """Any graph's output is the estimator over the mask that attn.mask returns."""
    q, k, v = qkv(2, 4, 2, 4, 23, 8, seed=11)
    am = causal_additive(4, 23)
    attn = mg.compile(
        mg.load_graph("oracle_topp", overrides={"sink_size": 2, "window_size": 3, "top_p": 0.5})
    )
    p = attn.mask(q, k, v, am)
    assert p.shape == (2, 4, 4, 23)
    torch.testing.assert_close(attn(q, k, v, am).double(), reference(q, k, v, p, am), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "bad",
    [
        lambda q, k, v: (q[0], k, v),  # 3-D queries
        lambda q, k, v: (q, k, v[:, :, :3]),  # K mismatch
        lambda q, k, v: (q[:, :3], k[:, :2], v[:, :2]),  # Hq not a multiple of Hkv
        lambda q, k, v: (q.repeat(1, 1, 3, 1), k, v),  # Q > K
        lambda q, k, v: (q[..., :2], k, v),  # D mismatch
    ],
)
def test_shape_errors_are_named(bad):
    q, k, v = qkv(1, 4, 2, 3, 5, 4)
    with pytest.raises(mg.ShapeError):
        mg.compile("dense")(*bad(q, k, v))


def test_attention_mask_narrower_than_k_is_an_error():
    q, k, v = qkv(1, 2, 1, 2, 5, 4)
    with pytest.raises(mg.ShapeError, match="fewer than K"):
        mg.compile("dense")(q, k, v, attention_mask=torch.zeros(1, 1, 2, 4))


def test_unknown_backend_and_mode_are_named():
    with pytest.raises(mg.NotSupportedError, match="backend"):
        mg.compile("dense", backend="tvm")
    with pytest.raises(mg.NotSupportedError, match="mode"):
        mg.compile("dense", mode="fast")


def test_default_scaling_is_inverse_sqrt_d():
    q, k, v = qkv(1, 1, 1, 1, 3, 9)
    out = mg.compile("dense")(q, k, v)
    torch.testing.assert_close(
        out.double(), reference(q, k, v, scaling=1 / math.sqrt(9)), atol=1e-6, rtol=1e-6
    )


@pytest.mark.slow
def test_inductor_matches_eager():
    q, k, v = qkv(1, 4, 2, 3, 40, 8)
    am = causal_additive(3, 40)
    g = mg.load_graph("oracle_topk", overrides={"sink_size": 2, "window_size": 4, "heavy_size": 0.2})
    eager = mg.compile(g)
    ind = mg.compile(g, backend="inductor")
    torch.testing.assert_close(ind(q, k, v, am), eager(q, k, v, am), atol=1e-5, rtol=1e-5)
    q2, k2, v2 = qkv(1, 4, 2, 1, 57, 8, seed=3)  # another K: dynamic shapes
    torch.testing.assert_close(ind(q2, k2, v2), eager(q2, k2, v2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_keys", [1, 7, 8, 9, 15, 16, 17, 203])
def test_products_over_keys_at_every_key_count(num_keys):
    """The logits and the weighted sum are cut at a multiple of 8 keys (``ALIGN``): every key
    count, aligned or not, below 8 or above, must give the reference."""
    torch.manual_seed(num_keys)
    q = torch.randn(2, 6, 3 if num_keys >= 3 else 1, 16)
    k, v = torch.randn(2, 2, num_keys, 16), torch.randn(2, 2, num_keys, 16)
    p = torch.rand(2, 6, q.shape[2], num_keys).clamp_min(0.05)
    out, _ = attend(gqa_logits(q, k, 0.25), p, v)
    want = reference(q.double(), k.double(), v.double(), p.double(), scaling=0.25)
    assert torch.allclose(out.double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_keys", [4096, 4097, 4099, 4103])
def test_cublas_sees_only_aligned_key_counts(num_keys, monkeypatch):
    """No cliff by construction: each batched product over the keys runs on a multiple of
    ``ALIGN`` keys (rows of the key-length operand or output 16-byte aligned), or on the
    ALIGN … 2·ALIGN − 1 keys past the cut."""
    from maskgraph import attention

    seen = []
    real = attention.f32_bmm

    def spy(a, b):
        seen.append((tuple(a.shape), tuple(b.shape), a.stride(), b.stride()))
        return real(a, b)

    monkeypatch.setattr(attention, "f32_bmm", spy)
    q = torch.randn(1, 8, 1, 32)
    k = v = torch.randn(1, 2, num_keys, 32)
    attend(attention.gqa_logits(q, k, 0.2), torch.ones(1, 1, 1, num_keys), v)
    attention.gqa_weighted_sum(torch.rand(1, 8, 1, num_keys), v)
    key_dims = []
    for a_shape, b_shape, a_stride, _ in seen:
        if b_shape[2] != 32:  # logits: q (N, GQ, D) @ kᵀ (N, D, n): the output has n columns
            key_dims.append(b_shape[2])
        else:  # weighted sum: w (N, GQ, n) @ v (N, n, D), w's rows 16-byte aligned
            key_dims.append(a_shape[2])
            assert a_stride[1] % attention.ALIGN == 0
    assert len(key_dims) == 6  # logits, then the weighted sums of attend and of the call
    main, tail = key_dims[0::2], key_dims[1::2]
    assert all(n % attention.ALIGN == 0 for n in main), key_dims
    assert all(attention.ALIGN <= n < 2 * attention.ALIGN for n in tail), key_dims
    assert sum(key_dims) == 3 * num_keys
