"""Triton kernel of Quest's grouped page scores (imported only where Triton is installed).

One program per (row, KV head, query) and block of pages: the page bounds are read once and
scored against the G query heads of their group, U = Σ_d max(q_d·hi_d, q_d·lo_d); the kept
score is ``scaling`` times the max over the group. Jitted lazily (:mod:`maskgraph.triton_util`).
"""

import triton.language as tl

from .group import group_coords
from .keymask import forbid_pages
from .pdl import enter
from .topk import EX_ARGS, store_range


def quest_group_scores(
    Q, LO, HI, OUT, RANGES, AM,
    n_pages, n_q, hkv, g_heads, kv_div, dim, scaling, n_keys, page_size, sab, sah, saq,
    ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8,
    BLOCK: tl.constexpr, DIM: tl.constexpr, PS: tl.constexpr = 16, HAS_AM: tl.constexpr = False,
    NEX: tl.constexpr = 0, PDL: tl.constexpr = False,
):  # fmt: skip
    """Q (B, Hq, Q, D), LO/HI (B, Hkv / kv_div, P, D), OUT (B, Hkv, Q, P) float32, all
    contiguous: ``hkv`` groups of ``g_heads`` query heads, group h reading page bounds h // kv_div
    (kv_div 1: the KV groups; g_heads 1 and kv_div the group size: one query head a row);
    RANGES (B·Hkv·Q, ⌈P / BLOCK⌉, 2) int32: each program's score bounds (:func:`store_range`).
    ``HAS_AM``: the additive mask AM over the ``n_keys`` keys (strides ``sab``, ``sah``,
    ``saq``; row h of OUT reads head h) forbids keys: a page of ``page_size`` keys (PS ≥ it a
    power of two) none of which it allows scores −inf; with NEX > 0 also one none of whose
    allowed keys lies outside the prior's runs ``ex*`` (given per key, block 1)."""
    enter(PDL)
    qi, kvh, b = group_coords(n_q, hkv)
    pages = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    d = tl.arange(0, DIM)
    inside = (pages < n_pages)[:, None] & (d < dim)[None, :]
    at = (((b * hkv + kvh) // kv_div) * n_pages + pages)[:, None] * dim + d[None, :]
    lo = tl.load(LO + at, mask=inside, other=0.0).to(tl.float32)
    hi = tl.load(HI + at, mask=inside, other=0.0).to(tl.float32)
    best = tl.full((BLOCK,), float("-inf"), tl.float32)
    for gi in range(0, g_heads):
        hq = kvh * g_heads + gi
        q = tl.load(Q + ((b * hkv * g_heads + hq) * n_q + qi) * dim + d, mask=d < dim, other=0.0)
        q = q.to(tl.float32)[None, :]
        best = tl.maximum(best, tl.sum(tl.maximum(q * hi, q * lo), 1))
    out = OUT + ((b * hkv + kvh) * n_q + qi) * n_pages + pages
    score = best * scaling
    score = forbid_pages(
        score, AM, b, kvh, qi, pages, n_pages, n_keys, page_size, sab, sah, saq,
        ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8, PS, HAS_AM, NEX,
    )  # fmt: skip
    tl.store(out, score, mask=pages < n_pages)
    store_range(RANGES, tl.program_id(0) * tl.num_programs(1) + tl.program_id(1), score, pages < n_pages)


def quest_group_scores_dot(
    Q, LO, HI, OUT, RANGES, AM,
    n_pages, n_q, hkv, g_heads, kv_div, dim, scaling, n_keys, page_size, sab, sah, saq,
    ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8,
    BLOCK: tl.constexpr, DIM: tl.constexpr, GP: tl.constexpr, UPCAST: tl.constexpr,
    EACH_HEAD: tl.constexpr = False, PS: tl.constexpr = 16, HAS_AM: tl.constexpr = False,
    NEX: tl.constexpr = 0, PDL: tl.constexpr = False,
):  # fmt: skip
    """As :func:`quest_group_scores` for 16-bit queries and bounds of one dtype, on the tensor
    cores: U = relu(q)·hi + min(q, 0)·lo as two (BLOCK, D) × (D, GP) products, GP ≥ 16 ≥ the
    group's heads (the products of 16-bit numbers are exact; accumulation is float32).
    ``EACH_HEAD``: every head's own scores instead of their max, OUT (B, Hkv·G, Q, P) and
    RANGES per head row (the bounds read once for the group; kv_div 1; head kvh·G + j of the
    mask for head j). ``UPCAST``: the
    products in float32, only for the interpreter (its bf16 ``tl.dot`` returns garbage, Triton
    3.9)."""
    enter(PDL)
    qi, kvh, b = group_coords(n_q, hkv)
    pages = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    d = tl.arange(0, DIM)
    g = tl.arange(0, GP)
    inside = (pages < n_pages)[:, None] & (d < dim)[None, :]
    at = (((b * hkv + kvh) // kv_div) * n_pages + pages)[:, None] * dim + d[None, :]
    lo = tl.load(LO + at, mask=inside, other=0.0)
    hi = tl.load(HI + at, mask=inside, other=0.0)
    heads = (b * hkv * g_heads + kvh * g_heads + g) * n_q + qi
    q = tl.load(
        Q + heads[None, :] * dim + d[:, None], mask=(g < g_heads)[None, :] & (d < dim)[:, None], other=0.0
    )
    if UPCAST:
        lo, hi, q = lo.to(tl.float32), hi.to(tl.float32), q.to(tl.float32)
    u = tl.dot(hi, tl.maximum(q, 0.0).to(hi.dtype), input_precision="ieee")
    u = tl.dot(lo, tl.minimum(q, 0.0).to(lo.dtype), acc=u, input_precision="ieee")
    if EACH_HEAD:
        for j in range(0, g_heads):
            score = tl.sum(tl.where((g == j)[None, :], u, 0.0), 1) * scaling
            score = forbid_pages(
                score, AM, b, kvh * g_heads + j, qi, pages, n_pages, n_keys, page_size, sab, sah, saq,
                ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8, PS, HAS_AM, NEX,
            )  # fmt: skip
            row = ((b * hkv + kvh) * g_heads + j) * n_q + qi
            tl.store(OUT + row * n_pages + pages, score, mask=pages < n_pages)
            store_range(RANGES, row * tl.num_programs(1) + tl.program_id(1), score, pages < n_pages)
    else:
        best = tl.max(tl.where((g < g_heads)[None, :], u, float("-inf")), 1)
        out = OUT + ((b * hkv + kvh) * n_q + qi) * n_pages + pages
        score = best * scaling
        score = forbid_pages(
            score, AM, b, kvh, qi, pages, n_pages, n_keys, page_size, sab, sah, saq,
            ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8, PS, HAS_AM, NEX,
        )  # fmt: skip
        tl.store(out, score, mask=pages < n_pages)
        store_range(RANGES, tl.program_id(0) * tl.num_programs(1) + tl.program_id(1), score, pages < n_pages)


def quest_page_update(
    K, LO, HI, NUM,
    pages, new, page_size, hkv, dim, skb, skh, skk,
    PS: tl.constexpr, DIM: tl.constexpr,
):  # fmt: skip
    """Program (b·Hkv + h, i) recomputes page (n − new) // page_size + i (capped at the last
    page) of keys K (B, Hkv, Kmax, D) (strides skb, skh, skk; last dimension contiguous), n the
    token count at NUM (a 0-d int64 tensor): rows past n − 1 read as row n − 1, so a partial
    page is bounded by its tokens alone. LO/HI (B, Hkv, P, D) contiguous, in the keys' dtype."""
    bh = tl.program_id(0).to(tl.int64)
    n = tl.load(NUM)
    page = tl.minimum((n - new) // page_size + tl.program_id(1), pages - 1)
    r = tl.arange(0, PS)
    rows = tl.minimum(page * page_size + r, n - 1)
    d = tl.arange(0, DIM)
    inside = (r < page_size)[:, None] & (d < dim)[None, :]
    base = K + (bh // hkv) * skb + (bh % hkv) * skh
    x = tl.load(base + rows[:, None] * skk + d[None, :], mask=inside, other=0.0).to(tl.float32)
    lo = tl.min(tl.where(inside, x, float("inf")), 0)
    hi = tl.max(tl.where(inside, x, float("-inf")), 0)
    at = (bh * pages + page) * dim + d
    tl.store(LO + at, lo.to(LO.dtype.element_ty), mask=d < dim)
    tl.store(HI + at, hi.to(HI.dtype.element_ty), mask=d < dim)


#: A decode's runs move with its position: no specialisation on their values.
quest_group_scores.do_not_specialize = EX_ARGS
quest_group_scores_dot.do_not_specialize = EX_ARGS
