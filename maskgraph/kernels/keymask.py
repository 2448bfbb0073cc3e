"""The attention mask as the estimators' score kernels read it (imported only where Triton is
installed): an additive mask row per (batch, head, query), −inf where a key is forbidden."""

import triton
import triton.language as tl

from .topk import dropped


@triton.jit
def _row(AM, b, h, qi, sb, sh, sq):
    """The mask row of (batch b, head h, query qi), in 64-bit offsets (a per-head prefill mask
    passes 2**31 elements)."""
    return AM + b.to(tl.int64) * sb + h.to(tl.int64) * sh + qi.to(tl.int64) * sq


@triton.jit
def keys_allowed(AM, b, h, qi, offs, inside, sb, sh, sq, HAS_AM: tl.constexpr):
    """Bool per lane of ``offs``: inside the row and, with ``HAS_AM``, not −inf in the mask row
    AM + b·sb + h·sh + qi·sq (its keys contiguous; a stride is 0 where the mask broadcasts;
    any float dtype, compared in float32)."""
    if HAS_AM:
        x = tl.load(_row(AM, b, h, qi, sb, sh, sq) + offs, mask=inside, other=float("-inf"))
        return inside & (x.to(tl.float32) > float("-inf"))
    return inside


@triton.jit
def pages_allowed(
    AM, b, h, qi, pages, n_pages, n_keys, page_size, sb, sh, sq,
    ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8,
    PS: tl.constexpr, HAS_AM: tl.constexpr, NEX: tl.constexpr = 0,
):  # fmt: skip
    """Bool per page of ``pages``: a page of the row holding at least one key the mask allows
    (``keys_allowed`` over its ``page_size`` keys, PS ≥ page_size a power of two) and, with
    NEX > 0, outside the prior's runs ``ex*`` for query ``qi`` (given per key: block 1, see
    :func:`maskgraph.kernels.topk.dropped`); with neither, every page of the row."""
    real = pages < n_pages
    if HAS_AM or NEX > 0:
        r = tl.arange(0, PS)
        keys = pages[:, None] * page_size + r[None, :]
        ok = real[:, None] & (r < page_size)[None, :] & (keys < n_keys)
        if HAS_AM:
            x = tl.load(_row(AM, b, h, qi, sb, sh, sq) + keys, mask=ok, other=float("-inf"))
            ok = ok & (x.to(tl.float32) > float("-inf"))
        if NEX > 0:
            ok = ok & ~dropped(keys, qi, ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8, NEX)
        return tl.max(ok.to(tl.int32), 1) > 0
    return real


@triton.jit
def forbid_pages(
    score, AM, b, h, qi, pages, n_pages, n_keys, page_size, sb, sh, sq,
    ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8,
    PS: tl.constexpr, HAS_AM: tl.constexpr, NEX: tl.constexpr,
):  # fmt: skip
    """``score`` per page, −inf where :func:`pages_allowed` finds no eligible key (unchanged
    without a mask and runs)."""
    if HAS_AM or NEX > 0:
        ok = pages_allowed(
            AM, b, h, qi, pages, n_pages, n_keys, page_size, sb, sh, sq,
            ex0, ex1, ex2, ex3, ex4, ex5, ex6, ex7, ex8, PS, HAS_AM, NEX,
        )  # fmt: skip
        score = tl.where(ok, score, float("-inf"))
    return score
