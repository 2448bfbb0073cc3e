"""The attention mask as the estimators' score kernels read it (imported only where Triton is
installed): an additive mask row per (batch, head, query), −inf where a key is forbidden."""

import triton
import triton.language as tl


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
    AM, b, h, qi, pages, n_pages, n_keys, page_size, sb, sh, sq, PS: tl.constexpr, HAS_AM: tl.constexpr
):
    """Bool per page of ``pages``: a page of the row holding at least one key the mask allows
    (``keys_allowed`` over its ``page_size`` keys, PS ≥ page_size a power of two); without
    ``HAS_AM`` every page of the row."""
    real = pages < n_pages
    if HAS_AM:
        r = tl.arange(0, PS)
        keys = pages[:, None] * page_size + r[None, :]
        inside = real[:, None] & (r < page_size)[None, :] & (keys < n_keys)
        x = tl.load(_row(AM, b, h, qi, sb, sh, sq) + keys, mask=inside, other=float("-inf"))
        return tl.max((x.to(tl.float32) > float("-inf")).to(tl.int32), 1) > 0
    return real
