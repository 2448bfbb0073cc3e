"""Attention over gathered keys: the estimator of docs/concepts.md restricted to an index list.

Only the listed keys and values are read: (B, Hsel, Qc, n, D) of each, where Hsel is Hq (each
query head owns its list) or Hkv (the query heads of a KV group share one list and are
batched together, so each gathered key serves G queries).
"""

from __future__ import annotations

import torch

from ..attention import f32_bmm
from ..lowering.indexset import expand_heads

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


def run_of(t: torch.Tensor, dim: int, start, length, limit: torch.Tensor | None = None) -> torch.Tensor:
    """``t`` at positions start … start + length − 1 along ``dim``: a view for an int start, an
    index_select (one copy of the run) for a 0-d tensor start (a static buffer's window). With
    ``limit`` (a static buffer's token count), positions from ``limit`` on read as zeros: the
    padding, whatever it holds, never reaches a sum."""
    static = isinstance(start, torch.Tensor) or limit is not None
    pos = start + torch.arange(length, device=t.device) if static else None
    run = t.index_select(dim, pos) if isinstance(start, torch.Tensor) else t.narrow(dim, start, length)
    if limit is None:
        return run
    keep = (pos < limit).view(*([1] * (dim % t.dim())), length, *([1] * (t.dim() - dim % t.dim() - 1)))
    return torch.where(keep, run, torch.zeros((), dtype=t.dtype, device=t.device))


def span_logits(queries, keys, start, length, scaling, limit=None) -> torch.Tensor:
    """Logits over the run keys[:, :, start:start+length] (no copy for an int start):
    (B, Hq, Qc, length) f32."""
    b, hq, qc, d = queries.shape
    hkv = keys.shape[1]
    k3 = run_of(keys, 2, start, length, limit).reshape(b * hkv, length, d)
    q3 = queries.reshape(b * hkv, (hq // hkv) * qc, d)
    return (f32_bmm(q3, k3.transpose(1, 2)) * scaling).view(b, hq, qc, length)


def span_values(weights, values, start, length, limit=None) -> torch.Tensor:
    """Σ_j w_j v_j over the run: weights (B, Hq, Qc, length) f32 -> (B, Hq, Qc, D) f32."""
    b, hq, qc, _ = weights.shape
    hkv, d = values.shape[1], values.shape[3]
    v3 = run_of(values, 2, start, length, limit).reshape(b * hkv, length, d)
    w3 = weights.reshape(b * hkv, (hq // hkv) * qc, length)
    if v3.is_cuda and v3.dtype in (torch.float16, torch.bfloat16):
        w3 = w3.to(v3.dtype)  # weights in [0, 1]: rounding them is below half output precision
    return f32_bmm(w3, v3).view(b, hq, qc, d)


def gathered_logits(queries, kg, scaling) -> torch.Tensor:
    """Logits over gathered keys kg (B, Hsel, Qc, n, D): (B, Hq, Qc, n) f32."""
    b, hq, qc, d = queries.shape
    hsel, n = kg.shape[1], kg.shape[3]
    g = hq // hsel
    rows = b * hsel * qc
    # one small (G, D) @ (D, n) product per (row, selection head, query)
    q3 = queries.reshape(b, hsel, g, qc, d).transpose(2, 3).reshape(rows, g, d)
    s = f32_bmm(q3, kg.reshape(rows, n, d).transpose(1, 2)) * scaling
    return s.view(b, hsel, qc, g, n).transpose(2, 3).reshape(b, hq, qc, n)


def gathered_values(weights, vg) -> torch.Tensor:
    """Σ_j w_j v_j over gathered values vg (B, Hsel, Qc, n, D): weights (B, Hq, Qc, n) f32."""
    b, hq, qc, n = weights.shape
    hsel, d = vg.shape[1], vg.shape[4]
    g = hq // hsel
    rows = b * hsel * qc
    w3 = weights.view(b, hsel, g, qc, n).transpose(2, 3).reshape(rows, g, n)
    if vg.is_cuda and vg.dtype in (torch.float16, torch.bfloat16):
        w3 = w3.to(vg.dtype)
    out = f32_bmm(w3, vg.reshape(rows, n, d)).view(b, hsel, qc, g, d).transpose(2, 3)
    return out.reshape(b, hq, qc, d)


def attend_parts(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    spans: list[tuple],
    gathered: tuple[torch.Tensor, torch.Tensor] | None,
    sinks: torch.Tensor | None = None,
    limit: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of each query over the union of its parts (disjoint where valid).

    queries (B, Hq, Qc, D); keys, values (B, Hkv, K, D); attention_mask additive, broadcastable
    to (B, Hq, Qc, K), or None; ``spans``: (start, length, valid) runs read as slices, valid bool
    broadcastable to (B, h, Qc, length); ``gathered``: (idx int64, valid bool) of shape
    (B, Hsel, Qc, n), Hsel ∈ {Hkv, Hq}, read by gathering; sinks (Hq,) optional sink logits;
    ``limit``: a static buffer's token count (runs read zeros from it on). Returns out (B, Hq, Qc, D) float32 (zeros on a row with no attended key) and the 0-d int64
    count of such rows.
    """
    b, hq, qc, d = queries.shape
    am = None
    if attention_mask is not None:
        am = attention_mask.expand(b, hq, qc, attention_mask.shape[-1])
    logits, sizes = [], []
    for start, length, valid in spans:
        s = span_logits(queries, keys, start, length, scaling, limit)
        if am is not None:
            s = s + run_of(am, -1, start, length).float()
        logits.append(torch.where(expand_heads(valid, hq), s, NEG_INF))
        sizes.append(length)
    kg = vg = None
    if gathered is not None:
        idx, valid = gathered
        safe = torch.where(valid, idx, 0)
        kg, vg = gather_kv(keys, values, safe)
        s = gathered_logits(queries, kg, scaling)
        sel_idx = expand_heads(safe, hq)
        if am is not None:
            s = s + torch.gather(am, -1, sel_idx.expand(b, hq, qc, safe.shape[-1])).float()
        logits.append(torch.where(expand_heads(valid, hq), s, NEG_INF))
        sizes.append(safe.shape[-1])
    s = logits[0] if len(logits) == 1 else torch.cat(logits, dim=-1)
    if s.shape[-1] == 0:  # every part is empty (budgets that floor to 0): no key is attended
        empty = queries.new_full((), b * hq * qc, dtype=torch.int64)  # on the queries' device
        return queries.new_zeros(b, hq, qc, d, dtype=torch.float32), empty
    m = s.amax(dim=-1, keepdim=True)
    empty = m == NEG_INF  # logits are finite or −inf: one comparison instead of isfinite
    if sinks is not None:
        sk = sinks.float().view(1, hq, 1, 1)
        m = torch.maximum(m, sk)
    m = torch.where(m == NEG_INF, 0.0, m)
    w = torch.exp(s - m)
    den = w.sum(dim=-1, keepdim=True)
    if sinks is not None:
        den = den + torch.exp(sinks.float().view(1, hq, 1, 1) - m)
    pieces = torch.split(w, sizes, dim=-1)
    num = None
    for (start, length, _), piece in zip(spans, pieces):
        part = span_values(piece, values, start, length, limit)
        num = part if num is None else num + part
    if vg is not None:
        part = gathered_values(pieces[-1], vg)
        num = part if num is None else num + part
    # den = 0 only where no key is attended, and then num = 0 exactly: the output is 0
    out = num / den.clamp_min(torch.finfo(torch.float32).tiny)
    return out, empty.sum()


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
    """Softmax attention of each query over its listed keys (all gathered).

    idx int64 and valid bool broadcastable to (B, Hsel, Qc, n), Hsel ∈ {Hkv, Hq}; entries are
    distinct where valid; the rest as :func:`attend_parts`.
    """
    b, qc = queries.shape[0], queries.shape[2]
    lead = (b, idx.shape[1], qc, idx.shape[-1])
    gathered = (idx.expand(lead), valid.expand(lead))
    return attend_parts(queries, keys, values, attention_mask, scaling, [], gathered, sinks)
