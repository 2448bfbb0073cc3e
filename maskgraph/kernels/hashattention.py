"""Triton kernel of HashAttention's grouped scores (imported only where Triton is installed).

One program per (row, KV head, query) and block of keys: each key's signature words are read
once from the packed cache and compared with the G query heads' words of its group; the kept
score is the max over the group of the agreeing bits. Jitted lazily (:mod:`maskgraph.triton_util`).
"""

import triton
import triton.language as tl
from triton.language.extra import libdevice

from .group import group_coords
from .keymask import keys_allowed
from .pdl import enter
from .topk import EX_ARGS, dropped


@triton.jit
def _popcount16(x):
    x = x - ((x >> 1) & 0x5555)
    x = (x & 0x3333) + ((x >> 2) & 0x3333)
    x = (x + (x >> 4)) & 0x0F0F
    return (x + (x >> 8)) & 0x1F


@triton.jit
def _popcount32(x, HW: tl.constexpr):
    """Set bits of int32 ``x``: the GPU's popc instruction (``HW``), else SWAR on 16-bit
    halves (Triton's interpreter has no popc)."""
    if HW:
        return libdevice.popc(x)
    return _popcount16(x & 0xFFFF) + _popcount16((x >> 16) & 0xFFFF)


def hash_group_scores(
    QW, KW, OUT, HIST, AM,
    n_keys, n_q, hkv, g_heads, kv_div, n_words, hat_bits, sab, sah, saq,
    ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8,
    BLOCK: tl.constexpr, HC: tl.constexpr, NB: tl.constexpr = 0, NEX: tl.constexpr = 0,
    HW_POPC: tl.constexpr = False, HAS_AM: tl.constexpr = False, PDL: tl.constexpr = False,
):  # fmt: skip
    """QW (B, Hq, Q, W) int32, KW (B, Hkv / kv_div, K, W) int32, OUT (B, Hkv, Q, K) float32,
    contiguous; ``hkv`` groups of ``g_heads`` query heads, group h reading key head h // kv_div
    (kv_div 1: the KV groups; g_heads 1 and kv_div G: every query head its own row). The group's G query heads are compared with the keys HC at a time (a power of two) as one
    (HC, BLOCK) tile, keeping a running max (HC ≥ G for the usual groups of up to 4: each key
    word read once; larger groups read it once per HC heads, which keeps the tile's registers
    bounded). ``HW_POPC``: count bits with the GPU's popc (compiled kernels), else in SWAR
    steps (the interpreter). With NB > 0 each
    program also writes the bounded top-k's histogram of its block (BLOCK = the top-k's
    segment) to HIST (B·Hkv·Q, K / BLOCK, NB) int32: bin 1 + score, and bin 0 for the keys the
    prior's runs drop (``ex*``, NEX of them: :func:`maskgraph.kernels.topk.dropped`).
    ``HAS_AM``: the additive mask AM (strides ``sab``, ``sah``, ``saq``; row h of OUT reads
    head h) forbids keys: their score is −inf, their bin 0."""
    enter(PDL)
    qi, kvh, b = group_coords(n_q, hkv)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n_keys
    keys_at = KW + (((b * hkv + kvh) // kv_div) * n_keys + offs) * n_words
    best = tl.full((BLOCK,), -1, tl.int32)
    for h0 in range(0, g_heads, HC):
        g = h0 + tl.arange(0, HC)
        heads = g < g_heads
        query_at = QW + ((b * hkv * g_heads + kvh * g_heads + g) * n_q + qi) * n_words
        differ = tl.zeros((HC, BLOCK), tl.int32)
        for w in range(0, n_words):
            key = tl.load(keys_at + w, mask=inside, other=0)
            query = tl.load(query_at + w, mask=heads, other=0)
            differ += _popcount32(key[None, :] ^ query[:, None], HW_POPC)
        best = tl.maximum(best, tl.max(tl.where(heads[:, None], hat_bits - differ, -1), 0))
    ok = keys_allowed(AM, b, kvh, qi, offs, inside, sab, sah, saq, HAS_AM)  # inside, without AM
    score = best.to(tl.float32)
    if HAS_AM:
        score = tl.where(ok, score, float("-inf"))
    tl.store(OUT + ((b * hkv + kvh) * n_q + qi) * n_keys + offs, score, mask=inside)
    if NB > 0:
        row = tl.program_id(0).to(tl.int64)  # the top-k's row, (b·Hkv + kvh)·Q + qi
        bins = tl.where(ok, 1 + best, 0)
        if NEX > 0:
            bins = tl.where(dropped(offs, row, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8, NEX), 0, bins)
        counts = tl.histogram(bins, NB)
        nb = tl.arange(0, NB)
        counts -= tl.where(nb == 0, BLOCK - tl.sum(inside.to(tl.int32), 0), 0)  # padding lanes
        tl.store(HIST + (row * tl.num_programs(1) + tl.program_id(1)) * NB + nb, counts)


def hash_words(
    X, W1, B1, W2, B2, OUT,
    n, heads, dim, hidden, bits, n_words, sxb, sxh, sxn,
    DP: tl.constexpr, HB: tl.constexpr, BP: tl.constexpr, PDL: tl.constexpr = False,
):  # fmt: skip
    """One program per (batch, head, row) of X (B, H, n, D): the head's MLP
    silu(x·W1 + B1)·W2 + B2 in float32 (W1 (H, D, hidden), B1 (H, hidden), W2 (H, hidden, bits),
    B2 (H, bits), contiguous), hidden units HB at a time, and its sign bits packed 32 to an int32
    word (bit j of word w is output unit 32·w + j), OUT (B, H, n, n_words) contiguous; DP ≥ D,
    BP ≥ bits powers of two, BP ≥ 32."""
    enter(PDL)
    row = tl.program_id(0)
    i = row % n
    # 64-bit offsets: a growing cache's new keys are a view whose head stride is K·D
    h = ((row // n) % heads).to(tl.int64)
    b = (row // (n * heads)).to(tl.int64)
    d = tl.arange(0, DP)
    dm = d < dim
    x = tl.load(X + b * sxb + h * sxh + i * sxn + d, mask=dm, other=0.0).to(tl.float32)
    c = tl.arange(0, BP)
    cm = c < bits
    acc = tl.load(B2 + h * bits + c, mask=cm, other=0.0).to(tl.float32)
    for j0 in range(0, hidden, HB):
        j = j0 + tl.arange(0, HB)
        jm = j < hidden
        w1 = tl.load(
            W1 + (h * dim + d[:, None]) * hidden + j[None, :], mask=dm[:, None] & jm[None, :], other=0.0
        )
        pre = tl.sum(x[:, None] * w1.to(tl.float32), 0) + tl.load(B1 + h * hidden + j, mask=jm, other=0.0)
        unit = pre * tl.sigmoid(pre)  # silu; 0 on padded units
        w2 = tl.load(
            W2 + (h * hidden + j[:, None]) * bits + c[None, :], mask=jm[:, None] & cm[None, :], other=0.0
        )
        acc += tl.sum(unit[:, None] * w2.to(tl.float32), 0)
    bit = tl.reshape((acc > 0).to(tl.int32), (BP // 32, 32))  # padded units read 0: bit 0
    shifts = tl.arange(0, 32)
    packed = tl.sum(bit << shifts[None, :], 1)  # disjoint bits: the sum is their OR
    w = tl.arange(0, BP // 32)
    tl.store(OUT + row * n_words + w, packed, mask=w < n_words)


hash_group_scores.do_not_specialize = EX_ARGS
