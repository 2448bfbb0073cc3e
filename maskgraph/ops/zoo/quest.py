"""Quest: query-aware page selection from per-page key bounds (Tang et al., ICML 2024).

Keys are cut into pages of ``page_size`` consecutive tokens. Per page and channel the cache
keeps the minimum and maximum key value; for a query q the page bound

    U(q, page) = Σ_d max(q_d·min_d, q_d·max_d) = relu(q)·max + min(q, 0)·min

is an upper bound of q·k for every key k in the page. ``quest`` scores every token with
``scaling·U`` of its page; ``topk_pages`` then keeps whole pages by that score, up to a token
budget (pages = budget // page_size).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ...attention import f32_bmm
from ...env import int_max, int_min
from ...kernels import QUEST, jitted
from ...lowering import EstimatedScores, EstimatorLowering, MaskLowering, indexset
from ...lowering.chunk import (
    NEG_INF,
    BlockScores,
    SparseChunk,
    bounded_k,
    group_scores,
    kernel_exclusion,
    page_scores,
    prior_in_scores,
    score_ranges,
    selection_listed,
    size_budget,
    top_k,
)
from ...lowering.indexset import IndexSet
from ...registry import Param, Port, operator
from ...static_keys import StaticKeys
from ...triton_util import interpreting, pdl, usable
from ...types import PortType
from ..select import eligible_scores, topk_lowest

_NEG_INF = float("-inf")

#: Pages per program of the grouped page-score kernel (elementwise form, and the tensor-core
#: form that 16-bit queries and bounds of one dtype take, the faster of the two), and its warps.
QUEST_BLOCK = 32
QUEST_DOT_BLOCK = 64
QUEST_WARPS = 4

PAGE_SIZE = Param(
    "page_size",
    "int",
    16,
    "keys per page",
    low=1,
    high=4096,
    limit="a partial last page is padded to page_size keys in every call",
)
LABEL_BITS = Param(
    "label_bits", "int", 16, "bits of the stored page bounds (16 = not quantised)", low=1, high=16
)


# ----- key side: page bounds, maintained incrementally --------------------------------------------
def page_min_max(keys: torch.Tensor, page_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-page channel minima and maxima.

    keys (B, H, n, D) -> (min, max), each (B, H, ceil(n / page_size), D) float32; a partial last
    page summarises only the keys it holds.
    """
    b, h, n, d = keys.shape
    full = n // page_size * page_size
    # minima and maxima are exact in any float dtype: reduce first, convert the (P, D) results
    whole = keys[:, :, :full].reshape(b, h, full // page_size, page_size, d)
    lo, hi = [whole.amin(3).float()], [whole.amax(3).float()]
    if full < n:  # the partial last page: only the keys it holds
        lo.append(keys[:, :, full:].amin(2, keepdim=True).float())
        hi.append(keys[:, :, full:].amax(2, keepdim=True).float())
    if len(lo) == 1:
        return lo[0], hi[0]
    return torch.cat(lo, dim=2), torch.cat(hi, dim=2)


def quantise_bounds(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Round page minima down and maxima up on a ``2**bits``-level grid per (head, page).

    lo, hi (B, H, P, D). The grid spans [min_d lo, max_d hi] of each page; rounding outwards
    keeps U an upper bound. ``bits == 16`` returns the inputs unchanged.
    """
    if bits >= 16:
        return lo, hi
    base = lo.amin(-1, keepdim=True)
    top = hi.amax(-1, keepdim=True)
    step = ((top - base) / (2**bits - 1)).clamp_min(torch.finfo(torch.float32).tiny)
    lo_q = base + torch.floor((lo - base) / step) * step
    hi_q = base + torch.ceil((hi - base) / step) * step
    return torch.minimum(lo_q, lo), torch.maximum(hi_q, hi)


def prepare_quest(
    keys, values, params, slot, layer_idx, static: StaticKeys | None = None
) -> dict[str, torch.Tensor]:
    """Page bounds of ``keys`` (B, Hkv, K, D), cached in ``slot``.

    When K grows, only the pages from the (possibly partial) last cached page onwards are
    recomputed; when K shrinks or the shape changes, everything is rebuilt. A static buffer
    (``static``): see :func:`prepare_quest_static`.
    Returns ``{"lo": (B, Hkv, P, D), "hi": (B, Hkv, P, D)}``, P = ceil(K / page_size), in the
    keys' dtype when it is a 16-bit float (rounded outwards, so they still bound every key; Quest
    keeps its page metadata in the cache's precision), float32 otherwise.
    """
    page, bits = params["page_size"], params["label_bits"]
    b, h, k, d = keys.shape
    store = keys.dtype if keys.dtype in (torch.float16, torch.bfloat16) else torch.float32
    if static is not None:
        return prepare_quest_static(keys, page, bits, store, slot, static)
    lo, hi, n = slot.get("lo"), slot.get("hi"), slot.get("n") or 0
    fresh = (
        lo is None
        or slot.get("static") is not None
        or lo.dtype != store
        or k < n
        or lo.shape[:2] != (b, h)
        or lo.shape[-1] != d
        or lo.device != keys.device
        or slot.get("config") != (page, bits)
    )
    first_page = 0 if fresh else n // page
    new_lo, new_hi = quantise_bounds(*page_min_max(keys[:, :, first_page * page :], page), bits)
    new_lo, new_hi = round_outwards(new_lo, new_hi, store)
    if not fresh:
        new_lo = torch.cat([lo[:, :, :first_page], new_lo], dim=2)
        new_hi = torch.cat([hi[:, :, :first_page], new_hi], dim=2)
    slot.update(lo=new_lo, hi=new_hi, n=k, static=None, config=(page, bits), updated=(first_page * page, k))
    return {"lo": new_lo, "hi": new_hi}


def prepare_quest_static(
    keys, page: int, bits: int, store, slot, static: StaticKeys
) -> dict[str, torch.Tensor]:
    """Page bounds of a static buffer ``keys`` (B, Hkv, Kmax, D) holding ``static.num_keys``
    tokens: built for every page on the first call, then only the pages holding the call's new
    keys are recomputed and written in place. Rows past the last token are read as copies of
    the last token, so a partial page is bounded by its tokens alone (as when the keys grow);
    pages past it are never attended (the attention mask forbids all their keys)."""
    b, h, k, d = keys.shape
    pages = -(-k // page)
    lo, hi = slot.get("lo"), slot.get("hi")
    fresh = (
        lo is None
        or slot.get("static") != k
        or lo.dtype != store
        or lo.shape[:2] != (b, h)
        or lo.shape[-1] != d
        or lo.device != keys.device
        or slot.get("config") != (page, bits)
    )
    device = keys.device
    exact = bits >= 16 and store == keys.dtype  # minima and maxima of keys are keys, as stored
    if fresh:
        ids = torch.arange(pages, device=device)
    else:  # new keys n − new … n − 1 touch at most this many consecutive pages
        count = min(pages, (static.new + page - 2) // page + 1)
        if exact and usable(device) and keys.stride(-1) == 1:
            update_pages(keys, lo, hi, static, page, count)
            slot.update(n=None, static=k, config=(page, bits), updated=None)
            return {"lo": lo, "hi": hi}
        first = (static.num_keys - static.new) // page
        ids = (first + torch.arange(count, device=device)).clamp_max(pages - 1)
    rows = (ids.view(-1, 1) * page + torch.arange(page, device=device)).clamp_max(static.num_keys - 1)
    picked = keys.index_select(2, rows.flatten().clamp(0, k - 1)).view(b, h, ids.shape[0], page, d)
    if exact:
        new_lo, new_hi = torch.aminmax(picked, dim=3)
    else:
        picked = picked.float()
        new_lo, new_hi = quantise_bounds(picked.amin(3), picked.amax(3), bits)
        new_lo, new_hi = round_outwards(new_lo, new_hi, store)
    if fresh:
        lo, hi = new_lo, new_hi
    else:
        lo.index_copy_(2, ids, new_lo)
        hi.index_copy_(2, ids, new_hi)
    slot.update(lo=lo, hi=hi, n=None, static=k, config=(page, bits), updated=None)
    return {"lo": lo, "hi": hi}


def round_outwards(
    lo: torch.Tensor, hi: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 bounds -> ``dtype``, lo rounded down and hi up (exact when representable)."""
    if dtype == torch.float32:
        return lo, hi
    lo_c, hi_c = lo.to(dtype), hi.to(dtype)
    lo_c = torch.where(lo_c.float() > lo, torch.nextafter(lo_c, torch.full_like(lo_c, float("-inf"))), lo_c)
    hi_c = torch.where(hi_c.float() < hi, torch.nextafter(hi_c, torch.full_like(hi_c, float("inf"))), hi_c)
    return lo_c, hi_c


def update_pages(keys, lo, hi, static: StaticKeys, page: int, count: int) -> None:
    """Rewrite in place the ``count`` pages from the one holding key n − new (Triton, one
    launch): lo/hi (B, Hkv, P, D) contiguous in the keys' dtype, which holds the bounds
    exactly."""
    b, h, kmax, d = keys.shape
    jitted(QUEST, "quest_page_update")[(b * h, count)](
        keys, lo, hi, static.num_keys,
        lo.shape[2], static.new, page, h, d, *keys.stride()[:3],
        PS=max(16, 1 << (page - 1).bit_length()), DIM=max(16, 1 << (d - 1).bit_length()),
    )  # fmt: skip


# ----- query side ---------------------------------------------------------------------------------
def page_allowed(env, page_size: int, pages: int) -> torch.Tensor | None:
    """Bool (…, Qc, P): pages holding at least one key the attention mask allows (None = all)."""
    if env.allowed is None:
        return None
    allowed = env.allowed
    pad = pages * page_size - allowed.shape[-1]
    allowed = F.pad(allowed, (0, pad), value=False)
    return allowed.view(*allowed.shape[:-1], pages, page_size).any(-1)


def quest_sparse_scores(env, prep, *, page_size, label_bits) -> EstimatedScores:
    """Page scores ``scaling·U(q, page)`` (B, Hq, Qc, P) float32 from the page bounds only,
    −inf on pages with no allowed key; blocks of page_size keys."""
    lo, hi = prep["lo"], prep["hi"]
    b, hkv, pages, d = lo.shape
    hq, qc = env.Hq, env.Q
    q = env.queries.reshape(b * hkv, (hq // hkv) * qc, d)
    if q.dtype != lo.dtype:
        q = q.float()
    lo, hi = lo.to(q.dtype).reshape(b * hkv, pages, d), hi.to(q.dtype).reshape(b * hkv, pages, d)
    # the products of 16-bit queries and bounds are exact; accumulation is float32
    bound = f32_bmm(q.clamp_min(0), hi.transpose(1, 2)) + f32_bmm(q.clamp_max(0), lo.transpose(1, 2))
    scores = (bound * env.scaling).view(b, hq, qc, pages)
    ok = page_allowed(env, page_size, pages)
    if ok is not None:
        scores = scores.masked_fill(~ok, _NEG_INF)
    return EstimatedScores(scores, page_size)


@torch.library.custom_op("maskgraph::quest_group_scores", mutates_args=())
def _quest_group_scores(
    queries: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    scaling: float,
    heads: int,
    mask: torch.Tensor | None = None,
    page_size: int = 1,
    exclude: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """queries (B, Hq, Q, D), page bounds (B, Hkv, P, D) -> (B, heads, Q, P) float32 scores —
    heads = Hkv: the max over each KV group's query heads; heads = Hq: each query head's own —
    and their bounds (B, heads, Q, ⌈P / block⌉, 2) int32 (``ranges`` of the Triton top-k)
    (Triton). ``mask``: an additive (B|1, heads|1, Q|1, K) attention mask (keys contiguous)
    the kernel applies: −inf on pages of ``page_size`` keys with no key it allows;
    ``exclude``: the prior's runs per key (``[Q, 1, K, lo, hi, slope, …]``, the top-k's form):
    −inf also on pages none of whose allowed keys lies outside them."""
    from ...lowering.keymask import mask_strides
    from ...lowering.topk import exclusion_args

    b, hq, q, d = queries.shape
    hkv, pages = lo.shape[1], lo.shape[2]
    out = torch.empty(b, heads, q, pages, device=lo.device, dtype=torch.float32)
    dot = _quest_dot(queries, lo, hi)
    block = _quest_block(dot)
    each = dot and heads == hq  # the tensor-core kernel writes each head of its group
    groups = hkv if each else heads
    grid = (b * groups * q, -(-pages // block))
    ranges = torch.empty(b, heads, q, grid[1], 2, device=lo.device, dtype=torch.int32)
    args = (
        queries.contiguous(),
        lo.contiguous(),
        hi.contiguous(),
        out,
        ranges,
        out if mask is None else mask,
    )
    ex, nex = exclusion_args(exclude)
    n_keys = mask.shape[-1] if mask is not None else exclude[2] if exclude else pages * page_size
    args += (
        pages,
        q,
        groups,
        hq // groups,
        groups // hkv,
        d,
        scaling,
        n_keys,
        page_size,
        *mask_strides(mask),
        *ex,
    )
    dim = max(16, 1 << (d - 1).bit_length())
    masking = {"PS": max(16, 1 << (page_size - 1).bit_length()), "HAS_AM": mask is not None, "NEX": nex}
    if dot:
        gp = max(16, 1 << (hq // groups - 1).bit_length())
        jitted(QUEST, "quest_group_scores_dot")[grid](
            *args,
            BLOCK=block,
            DIM=dim,
            GP=gp,
            UPCAST=interpreting() and lo.dtype == torch.bfloat16,
            EACH_HEAD=each,
            **masking,
            num_warps=QUEST_WARPS,
            **pdl(lo.device, grid[0] * grid[1]),
        )
    else:
        jitted(QUEST, "quest_group_scores")[grid](
            *args, BLOCK=block, DIM=dim, **masking, num_warps=QUEST_WARPS, **pdl(lo.device, grid[0] * grid[1])
        )
    return out, ranges


def _quest_dot(queries: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> bool:
    """Whether the scores take the tensor-core kernel: 16-bit inputs of one dtype, and KV
    groups of more than one query head (the kernel scores a group's heads at once: a head
    alone would fill 1 of its 16 columns)."""
    sixteen = queries.dtype == lo.dtype == hi.dtype and lo.dtype in (torch.bfloat16, torch.float16)
    return sixteen and queries.shape[1] > lo.shape[1]


def _quest_block(dot: bool) -> int:
    """Pages per program of the group-score kernel (``dot``: the tensor-core one)."""
    return max(16, QUEST_DOT_BLOCK) if dot else QUEST_BLOCK


@_quest_group_scores.register_fake
def _(queries, lo, hi, scaling, heads, mask=None, page_size=1, exclude=None):
    b, q, pages = queries.shape[0], queries.shape[2], lo.shape[2]
    out = lo.new_empty(b, heads, q, pages, dtype=torch.float32)
    blocks = -(-pages // _quest_block(_quest_dot(queries, lo, hi)))
    return out, lo.new_empty(b, heads, q, blocks, 2, dtype=torch.int32)


def quest_group_scores(env, prep, *, page_size, label_bits, per_head: bool = False) -> EstimatedScores | None:
    """The max over each KV group's query heads of :func:`quest_sparse_scores`: (B, Hkv, Qc, P)
    float32, −inf on pages with no allowed key (the mask must be the same for every head), in
    one Triton kernel that reads each page's bounds once; None where Triton cannot run.
    ``per_head``: each query head's own scores (B, Hq, Qc, P) by the same kernel (any mask).
    The kernel applies the mask where it can (:func:`maskgraph.lowering.keymask.kernel_mask`;
    ``masked`` says so), else torch does. Where it does, the scores and their ranges are
    made on first use, and ``excluding`` makes them with the prior's runs forbidden too."""
    from ...lowering.keymask import kernel_mask

    lo, hi = prep["lo"], prep["hi"]
    if not usable(lo.device):
        return None
    heads = env.Hq if per_head else env.Hkv
    applied = kernel_mask(env, per_head)
    mask = None if applied is None else applied[0]
    scaling = float(env.scaling)

    def excluding(exclude: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
        return _quest_group_scores(env.queries, lo, hi, scaling, heads, mask, page_size, exclude)

    if applied is not None:
        made = []  # the launch without the prior, on first use (functools.cache: dynamo cannot trace it)

        def plain() -> tuple[torch.Tensor, torch.Tensor]:
            if not made:
                made.append(excluding(None))
            return made[0]

        return EstimatedScores(
            lambda: plain()[0], page_size, ranges=lambda: plain()[1], masked=True, excluding=excluding
        )
    scores, ranges = excluding(None)
    ok = page_allowed(env, page_size, lo.shape[2])
    if ok is not None:
        scores = scores.masked_fill(~ok, _NEG_INF)
    return EstimatedScores(scores, page_size, ranges=ranges)


def expand_blocks(scores: torch.Tensor, block: int, k: int) -> torch.Tensor:
    """Block scores (…, NB) -> token scores (…, K): every token takes its block's score."""
    nb = scores.shape[-1]
    return scores.unsqueeze(-1).expand(*scores.shape, block).reshape(*scores.shape[:-1], nb * block)[..., :k]


@operator(
    "quest",
    family="estimator",
    output=PortType.SCORES,
    inputs=[Port("queries", PortType.QUERIES), Port("keys", PortType.KEYS)],
    params=[PAGE_SIZE, LABEL_BITS],
    doc=(
        "Quest page bounds: every key scores scaling·U(q, page) of its page, with "
        "U = Σ_d max(q_d·min_d, q_d·max_d) over the page's per-channel key minima and maxima "
        "(optionally quantised outwards to label_bits). U ≥ q·k for every key of the page. "
        "−inf where the attention mask forbids a key. Shape (B, Hq, Q, K)."
    ),
    paper="Tang et al., ICML 2024, Quest: Query-Aware Sparsity for Efficient Long-Context LLM Inference",
    prepare=prepare_quest,
    stateful=True,
    batch_rows=("lo", "hi"),
    static_buffers=True,
    sparse=EstimatorLowering(
        quest_sparse_scores,
        group_scores=quest_group_scores,
        head_scores=functools.partial(quest_group_scores, per_head=True),
    ),
)
def quest(env, *, page_size, label_bits, prep) -> torch.Tensor:
    made = quest_sparse_scores(env, prep, page_size=page_size, label_bits=label_bits)
    return env.forbid(expand_blocks(made.scores, made.block, env.K))


def _pages_budget(params, inputs, num_keys: int) -> tuple[int, int]:
    """Whole pages, gathered: the budget as given, not capped at K (a partial last page counts
    as a page), at least one page."""
    page = params["page_size"]
    pages = -(-num_keys // page)
    return 0, max(1, size_budget(params["k"], num_keys, pages * page) // page) * page


def lower_topk_pages(ctx: SparseChunk, name, inputs, params, prep) -> IndexSet:
    """Quest's page-granular top-k: budget // page_size best pages, their eligible keys."""
    env = ctx.env
    # a constant under torch.compile (one compile per page size): the fused kernel takes it as
    # a compile-time constant, and inductor lost a symbolic one that only reached the output
    size = int(params["page_size"])
    prior: IndexSet | None = inputs.get("prior")
    pages = (env.K + size - 1) // size
    scores: BlockScores = inputs["scores"]
    kernel_ranges = None
    excluded = prior_in_scores(ctx, prior, scores) if scores.block == size else None
    if excluded is not None:  # under a mask: the estimator's kernel forbids the prior too
        exclude = None
        s, kernel_ranges = excluded
        s = group_scores(ctx, s, scores.grouped)
    else:
        # pages the prior covers are dropped by the top-k itself where it can (page-sized scores)
        exclude = kernel_exclusion(ctx, prior, scores, size) if scores.block == size else None
        masked_by = prior if exclude is None else None
        s = group_scores(ctx, page_scores(ctx, scores, masked_by, size, pages), scores.grouped)
    _, budget = bounded_k(ctx, params["k"])
    # pages from the budget as given, not capped at K first: a budget past K keeps every page,
    # the partial last one too (simulate's rule)
    n = int_min(env.size_bound(params["k"])[0] // size, pages)
    count = budget // size if isinstance(budget, torch.Tensor) else None
    # a budget below one page keeps none
    ranges = score_ranges(ctx, scores, s, kernel_ranges) if scores.block == size else None
    vals, page_idx = top_k(ctx, s, int_max(n, 1), size=count, exclude=exclude, ranges=ranges)
    kept = vals > NEG_INF
    offsets = torch.arange(size, device=s.device)
    tok = (page_idx.unsqueeze(-1) * size + offsets).flatten(-2)
    valid = kept.unsqueeze(-1).expand(*vals.shape, size).flatten(-2) & (tok < env.K)
    if n == 0:
        valid = torch.zeros_like(valid)
    tok = tok.clamp_max(env.K - 1)
    listed = selection_listed(prior, page_idx, vals, size) if n > 0 else None
    if prior is not None:
        valid = valid & ~prior.contains(tok)
    if env.allowed is not None and ctx.gqa != "shared":
        allowed = env.allowed.expand(env.B, env.Hq, env.Q, env.K)
        valid = valid & torch.gather(allowed, -1, tok)
        listed = None
    excludes = prior.leaves if prior is not None else frozenset()
    return indexset.selection_set(name, tok, valid, env.K, excludes, listed)


@operator(
    "topk_pages",
    family="selector",
    output=PortType.MASK,
    inputs=[
        Port("scores", PortType.SCORES, doc="token scores; a page scores the max of its tokens"),
        Port("prior", PortType.MASK, optional=True, doc="keys already selected (not chosen again)"),
    ],
    params=[
        Param("k", "size", 0.1, "token budget (int) or share of K (float); pages = budget // page_size"),
        PAGE_SIZE,
    ],
    doc=(
        "Page-granular top-k (Quest's selector): a page scores the max over its eligible keys "
        "(not in `prior`, allowed by the attention mask); the budget // page_size best pages "
        "with an eligible key are kept (ties toward the lowest page), all their eligible keys "
        "selected. A partial last page counts as a page. With page_size 1 this is `topk`. "
        "Shape (B, Hq, Q, K)."
    ),
    paper="Tang et al., ICML 2024 (page selection)",
    sparse=MaskLowering(lower_topk_pages, _pages_budget, scores_keys=True),
)
def topk_pages(env, *, scores, prior=None, k, page_size) -> torch.Tensor:
    s = eligible_scores(env, scores, prior)
    pages = -(-env.K // page_size)
    padded = F.pad(s, (0, pages * page_size - env.K), value=_NEG_INF)
    page_scores = padded.view(env.B, env.Hq, env.Q, pages, page_size).amax(-1)
    n = int_min(env.size(k) // page_size, pages)
    vals, idx = topk_lowest(page_scores, n)
    chosen = torch.zeros_like(page_scores).scatter_(-1, idx, (vals > _NEG_INF).float())
    return expand_blocks(chosen, page_size, env.K) * (s > _NEG_INF).float()
