"""Triton kernel of Double Sparsity's grouped scores (imported only where Triton is installed).

One program per (row, KV head, query) and block of keys: each key's packed label codes,
offset and step are read once and scored against the G query heads of its group; the kept
score is the max over the group. Jitted lazily (:mod:`maskgraph.triton_util`).
"""

import triton.language as tl

from ...pdl_kernel import enter


def ds_group_scores(
    QL, WORDS, LO, STEP, OUT,
    n_keys, n_q, hkv, g_heads, n_labels, n_words, bits, per_word, scaling,
    BLOCK: tl.constexpr, RP: tl.constexpr, PDL: tl.constexpr = False,
):  # fmt: skip
    """QL (B, Hkv, G·Q, R) query label channels (any float dtype; converted and summed here),
    WORDS (B, Hkv, K, W) int32 packed codes (code c in word c // per_word at bit
    (c % per_word)·bits), LO and STEP (B, Hkv, K) float32, OUT (B, Hkv, Q, K) float32,
    contiguous."""
    enter(PDL)
    row = tl.program_id(0)
    qi = row % n_q
    head = (row // n_q).to(tl.int64)  # b·Hkv + kv head
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n_keys
    r = tl.arange(0, RP)
    labelled = r < n_labels
    # each word is read by the per_word lanes of its codes (one memory transaction)
    word = tl.load(
        WORDS + (head * n_keys + offs[:, None]) * n_words + (r // per_word)[None, :],
        mask=inside[:, None] & labelled[None, :],
        other=0,
    )
    codes = ((word >> ((r % per_word) * bits)[None, :]) & ((1 << bits) - 1)).to(tl.float32)
    lo = tl.load(LO + head * n_keys + offs, mask=inside, other=0.0)
    step = tl.load(STEP + head * n_keys + offs, mask=inside, other=0.0)
    best = tl.full((BLOCK,), float("-inf"), tl.float32)
    for gi in range(0, g_heads):
        at = head * g_heads * n_q + gi * n_q + qi
        ql = tl.load(QL + at * n_labels + r, mask=labelled, other=0.0).to(tl.float32)
        dot = tl.sum(codes * ql[None, :], 1)
        best = tl.maximum(best, (lo * tl.sum(ql, 0) + step * dot) * scaling)
    tl.store(OUT + (head * n_q + qi) * n_keys + offs, best, mask=inside)
