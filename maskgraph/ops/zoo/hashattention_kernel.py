"""Triton kernel of HashAttention's grouped scores (imported only where Triton is installed).

One program per (row, KV head, query) and block of keys: each key's signature words are read
once from the packed cache and compared with the G query heads' words of its group; the kept
score is the max over the group of the agreeing bits. Jitted lazily (:mod:`maskgraph.triton_util`).
"""

import triton
import triton.language as tl

from ...pdl_kernel import enter
from .group_kernel import group_coords


@triton.jit
def _popcount16(x):
    x = x - ((x >> 1) & 0x5555)
    x = (x & 0x3333) + ((x >> 2) & 0x3333)
    x = (x + (x >> 4)) & 0x0F0F
    return (x + (x >> 8)) & 0x1F


def hash_group_scores(
    QW, KW, OUT,
    n_keys, n_q, hkv, g_heads, n_words, hat_bits,
    BLOCK: tl.constexpr, WP: tl.constexpr, PDL: tl.constexpr = False,
):  # fmt: skip
    """QW (B, Hq, Q, W) int32, KW (B, Hkv, K, W) int32, OUT (B, Hkv, Q, K) float32, contiguous;
    WP ≥ W a power of two (the words of a block of keys are read as one tile)."""
    enter(PDL)
    qi, kvh, b = group_coords(n_q, hkv)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    w = tl.arange(0, WP)
    inside = offs < n_keys
    tile = inside[:, None] & (w < n_words)[None, :]
    keys = tl.load(KW + ((b * hkv + kvh) * n_keys + offs)[:, None] * n_words + w[None, :], mask=tile, other=0)
    best = tl.full((BLOCK,), -1, tl.int32)
    for gi in range(0, g_heads):
        hq = kvh * g_heads + gi
        query = tl.load(QW + ((b * hkv * g_heads + hq) * n_q + qi) * n_words + w, mask=w < n_words, other=0)
        x = keys ^ query[None, :]
        differ = tl.sum(_popcount16(x & 0xFFFF) + _popcount16((x >> 16) & 0xFFFF), 1)
        best = tl.maximum(best, hat_bits - differ)
    tl.store(OUT + ((b * hkv + kvh) * n_q + qi) * n_keys + offs, best.to(tl.float32), mask=inside)
