"""Attention over gathered keys: the DESIGN §2 estimator restricted to an index list.

Only the listed keys and values are read: (B, Hsel, Qc, n, D) of each, where Hsel is Hq (each
query head owns its list) or Hkv (the query heads of a KV group share one list and are
batched together, so each gathered key serves G queries).
"""

from __future__ import annotations

import torch

from ..attention import f32_bmm

NEG_INF = float("-inf")


def gather_kv(
    keys: torch.Tensor, values: torch.Tensor, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """keys, values (B, Hkv, K, D); idx int64 (B, Hsel, Qc, n), Hsel a multiple of Hkv
    -> keys and values at idx, (B, Hsel, Qc, n, D) each; selection head h reads KV head
    h·Hkv // Hsel."""
    b, hsel = idx.shape[0], idx.shape[1]
    hkv = keys.shape[1]
    rows = torch.arange(b, device=idx.device).view(b, 1, 1, 1)
    heads = (torch.arange(hsel, device=idx.device) * hkv // hsel).view(1, hsel, 1, 1)
    return keys[rows, heads, idx], values[rows, heads, idx]


def gathered_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    idx: torch.Tensor,
    valid: torch.Tensor,
    sinks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of each query over its listed keys.

    queries (B, Hq, Qc, D); keys, values (B, Hkv, K, D); attention_mask additive, broadcastable
    to (B, Hq, Qc, K), or None; idx int64 and valid bool broadcastable to (B, Hsel, Qc, n) with
    Hsel ∈ {Hkv, Hq}; entries are distinct where valid; sinks (Hq,) optional sink logits.
    Returns out (B, Hq, Qc, D) float32 (zeros on a row with no attended key) and the 0-d int64
    count of such rows.
    """
    b, hq, qc, d = queries.shape
    hsel = idx.shape[1]
    n = idx.shape[-1]
    g = hq // hsel
    lead = (b, hsel, qc, n)
    valid = valid.expand(lead)
    safe = torch.where(valid, idx.expand(lead), 0)
    kg, vg = gather_kv(keys, values, safe)
    rows = b * hsel * qc
    # one small (G, D) @ (D, n) product per (row, selection head, query), float32 accumulate
    q3 = queries.reshape(b, hsel, g, qc, d).transpose(2, 3).reshape(rows, g, d)
    s = f32_bmm(q3, kg.reshape(rows, n, d).transpose(1, 2)) * scaling
    s = s.view(b, hsel, qc, g, n).transpose(2, 3)  # (B, Hsel, G, Qc, n)
    if attention_mask is not None:
        am = attention_mask.expand(b, hq, qc, attention_mask.shape[-1])
        am = am.reshape(b, hsel, g, qc, am.shape[-1])
        s = s + torch.gather(am, -1, safe.unsqueeze(2).expand(b, hsel, g, qc, n)).float()
    s = s.masked_fill(~valid.unsqueeze(2), NEG_INF)
    m = s.amax(dim=-1, keepdim=True)
    empty = ~torch.isfinite(m)
    if sinks is not None:
        sk = sinks.float().view(1, hsel, g, 1, 1)
        m = torch.maximum(torch.where(empty, sk, m), sk)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w = torch.exp(s - m)
    den = w.sum(dim=-1, keepdim=True)
    if sinks is not None:
        den = den + torch.exp(sinks.float().view(1, hsel, g, 1, 1) - m)
    w3 = w.transpose(2, 3).reshape(rows, g, n)
    if vg.is_cuda and vg.dtype in (torch.float16, torch.bfloat16):
        w3 = w3.to(vg.dtype)  # weights in [0, 1]: rounding them is below half output precision
    num = f32_bmm(w3, vg.reshape(rows, n, d)).view(b, hsel, qc, g, d).transpose(2, 3)
    out = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), 0.0)
    return out.reshape(b, hq, qc, d), empty.sum()
