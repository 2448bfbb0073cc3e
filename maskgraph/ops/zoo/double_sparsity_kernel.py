"""Triton kernel of Double Sparsity's grouped scores (imported only where Triton is installed).

One program per (row, KV head, query) and block of keys: each key's packed label codes (one
contiguous tile of words), offset and step are read once and scored against the G query heads of its group; the kept score is the
max over the group. Jitted lazily (:mod:`maskgraph.triton_util`).
"""

import triton.language as tl


def ds_group_scores(
    QL, QS, WORDS, LO, STEP, OUT,
    n_keys, n_q, hkv, g_heads, n_labels, n_words, bits, per_word, scaling,
    BLOCK: tl.constexpr, WP: tl.constexpr, CP: tl.constexpr,
):  # fmt: skip
    """QL (B, Hkv, G·Q, R) float32 query label channels, QS (B, Hkv, G·Q) their sums, WORDS
    (B, Hkv, K, W) int32 packed codes (code c in word c // per_word at bit (c % per_word)·bits),
    LO and STEP (B, Hkv, K) float32, OUT (B, Hkv, Q, K) float32, contiguous; WP ≥ W and
    CP ≥ per_word powers of two."""
    row = tl.program_id(0)
    qi = row % n_q
    head = (row // n_q).to(tl.int64)  # b·Hkv + kv head
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n_keys
    w = tl.arange(0, WP)
    j = tl.arange(0, CP)
    # the block's words as one contiguous tile, then each word's codes along a third axis
    words = tl.load(
        WORDS + (head * n_keys + offs[:, None]) * n_words + w[None, :],
        mask=inside[:, None] & (w < n_words)[None, :],
        other=0,
    )
    shift = tl.where(j < per_word, j * bits, 0)  # padding lanes: no shift past 31 bits
    codes = ((words[:, :, None] >> shift[None, None, :]) & ((1 << bits) - 1)).to(tl.float32)
    label = w[:, None] * per_word + j[None, :]  # (WP, CP): the label channel of each code
    real = (j < per_word)[None, :] & (label < n_labels)
    lo = tl.load(LO + head * n_keys + offs, mask=inside, other=0.0)
    step = tl.load(STEP + head * n_keys + offs, mask=inside, other=0.0)
    best = tl.full((BLOCK,), float("-inf"), tl.float32)
    for gi in range(0, g_heads):
        at = head * g_heads * n_q + gi * n_q + qi
        ql = tl.load(QL + at * n_labels + label, mask=real, other=0.0)
        dot = tl.sum(tl.sum(codes * ql[None, :, :], 2), 1)
        best = tl.maximum(best, (lo * tl.load(QS + at) + step * dot) * scaling)
    tl.store(OUT + (head * n_q + qi) * n_keys + offs, best, mask=inside)
