"""Triton kernel of Double Sparsity's grouped scores (imported only where Triton is installed).

One program per (row, KV head, query) and block of keys: each key's packed label codes,
offset and step are read once and scored against the G query heads of its group at once;
the kept score is the max over the group. Jitted lazily (:mod:`maskgraph.triton_util`).
"""

import triton.language as tl

from .keymask import keys_allowed
from .pdl import enter
from .topk import store_range


def ds_group_scores(
    QL, WORDS, LO, STEP, OUT, RANGES, AM,
    n_keys, n_q, hkv, g_heads, kv_div, n_labels, scaling, sab, sah, saq,
    BLOCK: tl.constexpr, GP: tl.constexpr, NW: tl.constexpr, BITS: tl.constexpr, PER: tl.constexpr,
    HAS_AM: tl.constexpr = False, PDL: tl.constexpr = False,
):  # fmt: skip
    """QL (B, Hkv, G·Q, R) query label channels (any float dtype; converted and summed here),
    WORDS (B, Hkv / kv_div, K, NW) int32 packed codes (code c in word c // PER at bit
    (c % PER)·BITS), LO and STEP (B, Hkv / kv_div, K) float32, OUT (B, Hkv, Q, K) float32,
    contiguous: ``hkv`` groups of G = ``g_heads`` query heads, group h reading key head
    h // kv_div (kv_div 1: the KV groups; G 1 and kv_div the KV group size: one query head a
    row); GP ≥ G a power of two; RANGES (B·Hkv·Q, ⌈K / BLOCK⌉, 2) int32: each program's score bounds
    (:func:`store_range`). Each word is loaded once per key (one lane per key) and its codes are
    taken apart in registers, NW·PER steps unrolled; the G heads' dot products are kept side by
    side (GP, BLOCK)."""
    enter(PDL)
    row = tl.program_id(0)
    qi = row % n_q
    head = (row // n_q).to(tl.int64)  # b·Hkv + kv head
    key = head // kv_div
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n_keys
    g = tl.arange(0, GP)
    grouped = g < g_heads
    q_at = QL + ((head * g_heads + g) * n_q + qi) * n_labels  # (GP,) rows of the heads' labels
    lo = tl.load(LO + key * n_keys + offs, mask=inside, other=0.0)
    step = tl.load(STEP + key * n_keys + offs, mask=inside, other=0.0)
    dot = tl.zeros((GP, BLOCK), tl.float32)
    q_sum = tl.zeros((GP,), tl.float32)
    for w in tl.static_range(NW):
        word = tl.load(WORDS + (key * n_keys + offs) * NW + w, mask=inside, other=0)
        for j in tl.static_range(PER):
            c = w * PER + j
            labelled = grouped & (tl.full((GP,), c, tl.int32) < n_labels)
            ql = tl.load(q_at + c, mask=labelled, other=0.0).to(tl.float32)
            code = ((word >> (j * BITS)) & ((1 << BITS) - 1)).to(tl.float32)
            dot += ql[:, None] * code[None, :]
            q_sum += ql
    score = (q_sum[:, None] * lo[None, :] + step[None, :] * dot) * scaling
    best = tl.max(tl.where(grouped[:, None], score, float("-inf")), 0)
    if HAS_AM:
        ok = keys_allowed(AM, (head // hkv), head % hkv, qi, offs, inside, sab, sah, saq, HAS_AM)
        best = tl.where(ok, best, float("-inf"))
    tl.store(OUT + (head * n_q + qi) * n_keys + offs, best, mask=inside)
    store_range(RANGES, row * tl.num_programs(1) + tl.program_id(1), best, inside)
