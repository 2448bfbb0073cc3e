"""Attention over a probability mask (docs/concepts.md): the self-normalised importance-sampling estimator.

All functions take grouped-query shapes without copying keys/values G-fold: query heads
``h`` read KV head ``h // G`` through a reshape to (B, Hkv, G*Q, ·).
"""

from __future__ import annotations

import torch

_HALF = (torch.float16, torch.bfloat16)

#: Products over the keys are cut at a multiple of ALIGN keys, the few keys past it done apart:
#: cuBLAS takes kernels several times slower (up to 15× for the weighted sum at 128K keys)
#: when the key count is not a multiple of 8, so without the cut a cache that grows by one key
#: a step would fall off that cliff every other step (docs/performance.md).
ALIGN = 8


def aligned(k: int) -> int:
    """Where products over ``k`` keys are cut: a multiple of :data:`ALIGN` that leaves
    ALIGN … 2·ALIGN − 1 keys past it (0: all ``k`` keys, when k < 2·ALIGN). From ALIGN keys on,
    the part past the cut is never 0 or 1 keys long, sizes that dynamo would compile a graph
    apart for, so a decode loop over a growing cache stays on one compiled graph (``k`` may be a
    symbolic int)."""
    return max(k // ALIGN * ALIGN - ALIGN, 0)


def f32_bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched a @ b with float32 accumulation and output: (N, M, P) @ (N, P, R) -> (N, M, R).

    On CUDA, half-precision operands stay in their dtype (no float32 copy of the keys or
    values is made); elsewhere they are upcast.
    """
    if a.is_cuda and a.dtype in _HALF and b.dtype == a.dtype:
        return torch.bmm(a, b, out_dtype=torch.float32)
    return torch.bmm(a.float(), b.float())


def gqa_logits(
    queries: torch.Tensor,
    keys: torch.Tensor,
    scaling: float,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scaled logits ``scaling·<q, k> + attention_mask`` in float32.

    queries (B, Hq, Q, D), keys (B, Hkv, K, D), attention_mask broadcastable to (B, Hq, Q, K)
    -> (B, Hq, Q, K) float32.
    """
    b, hq, q, d = queries.shape
    hkv, k = keys.shape[1], keys.shape[2]
    g = hq // hkv
    qf = queries.reshape(b * hkv, g * q, d)
    kf = keys.to(queries.dtype).reshape(b * hkv, k, d)
    cut = aligned(k)
    main = f32_bmm(qf, kf[:, :cut].transpose(1, 2))
    tail = f32_bmm(qf, kf[:, cut:].transpose(1, 2))
    s = torch.cat([main, tail], dim=-1) * scaling
    s = s.view(b, hq, q, k)
    if attention_mask is not None:
        s = s + attention_mask.float()
    return s


def gqa_weighted_sum(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Σ_j w_j v_j per query head: weights (B, Hq, Q, K), values (B, Hkv, K, D) -> (B, Hq, Q, D) f32."""
    b, hq, q, k = weights.shape
    hkv, d = values.shape[1], values.shape[3]
    g = hq // hkv
    w = weights.reshape(b * hkv, g * q, k)
    if values.is_cuda and values.dtype in _HALF:
        w = w.to(values.dtype)  # weights in [0, 1/p]: rounding them is below bf16 output precision
    v = values.reshape(b * hkv, k, d)
    # rows of the weight matrix start at 16-byte boundaries whatever K is (see ALIGN)
    padded = w.new_zeros(b * hkv, g * q, k // ALIGN * ALIGN + ALIGN)  # longer than k: no guard on K
    padded[..., :k] = w
    cut = aligned(k)
    out = f32_bmm(padded[..., :cut], v[:, :cut]) + f32_bmm(padded[..., cut:k], v[:, cut:])
    return out.view(b, hq, q, d)


def masked_partial(
    logits: torch.Tensor, mask: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Numerator, denominator and max of attention over ``mask``.

    logits (B, Hq, Q, K) f32, mask broadcastable to it (probabilities), values (B, Hkv, K, D).
    Returns num (B, Hq, Q, D), den (B, Hq, Q), m (B, Hq, Q) with
    ``num = Σ_{p>0} exp(s−m)/p·v``, ``den = Σ_{p>0} exp(s−m)/p``; ``m`` is the max over kept keys
    (0 where a row keeps none, so that num = den = 0 there). A NaN or +inf kept logit makes the
    row's sums NaN, as in softmax.
    """
    keep = mask > 0
    s = torch.where(keep, logits, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(m == float("-inf"), torch.zeros_like(m), m)
    inv_p = torch.where(keep, 1.0 / mask.clamp_min(1e-30), 0.0)
    w = torch.exp(s - m) * inv_p
    den = w.sum(dim=-1)
    num = gqa_weighted_sum(w, values)
    return num, den, m.squeeze(-1)


def _weights(
    logits: torch.Tensor, mask: torch.Tensor, sinks: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unnormalised weights ``exp(s − m)/p`` (B, Hq, Q, K) of the kept keys, their denominator
    (B, Hq, Q, 1) (sink logits included) and the rows with no kept key (B, Hq, Q, 1) bool."""
    keep = mask > 0
    s = torch.where(keep, logits, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    empty = m == float("-inf")  # NaN and +inf maxima are not empty rows: they propagate
    if sinks is not None:
        sk = sinks.float().view(1, -1, 1, 1)
        m = torch.maximum(torch.where(empty, sk, m), sk)
    m = torch.where(m == float("-inf"), torch.zeros_like(m), m)
    inv_p = torch.where(keep, 1.0 / mask.clamp_min(1e-30), 0.0)
    w = torch.exp(s - m) * inv_p
    den = w.sum(dim=-1, keepdim=True)
    if sinks is not None:
        den = den + torch.exp(sinks.float().view(1, -1, 1, 1) - m)
    return w, den, empty


def attend(
    logits: torch.Tensor,
    mask: torch.Tensor,
    values: torch.Tensor,
    sinks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention output over a probability mask, float32, and the count of empty rows.

    logits (B, Hq, Q, K) f32, mask broadcastable to (B, Hq, Q, K), values (B, Hkv, K, D),
    sinks (Hq,) optional per-head sink logits (GPT-OSS style: they add to the denominator only).
    Returns out (B, Hq, Q, D) f32 and a 0-d int64 tensor: rows with no attended key (zeros out).
    Non-finite inputs propagate as in softmax attention (SDPA): a NaN among a row's kept logits
    or values, or a +inf kept logit, makes the row NaN; such a row is not counted as empty.
    """
    w, den, empty = _weights(logits, mask, sinks)
    num = gqa_weighted_sum(w, values)
    # den is 0 only on an empty row (every kept weight is ≥ 1 at the max), NaN where NaN came in
    out = torch.where(den == 0, 0.0, num / torch.where(den == 0, torch.ones_like(den), den))
    return out, empty.sum()


def attend_with_feedback(
    logits: torch.Tensor,
    mask: torch.Tensor,
    values: torch.Tensor,
    sinks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`attend`, plus what operators with ``feedback=`` read, from the same weights:
    each key's attention probability summed over the queries, (B, Hq, K) float32, and the last
    query's probabilities (B, Hq, K) float32 (0 on keys not kept; an empty row gives 0s)."""
    w, den, empty = _weights(logits, mask, sinks)
    num = gqa_weighted_sum(w, values)
    safe = torch.where(den == 0, torch.ones_like(den), den)
    out = torch.where(den == 0, 0.0, num / safe)
    probs = w / safe
    return out, empty.sum(), probs.sum(dim=2), probs[:, :, -1]


def attention_probabilities(
    logits: torch.Tensor, mask: torch.Tensor, sinks: torch.Tensor | None = None
) -> torch.Tensor:
    """The normalised weights of attention over ``mask``: (B, Hq, Q, K) float32, rows summing
    to 1 less the sinks' share (0 on keys not kept, all 0 on an empty row)."""
    w, den, _ = _weights(logits, mask, sinks)
    return w / torch.where(den == 0, torch.ones_like(den), den)
