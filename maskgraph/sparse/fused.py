"""Fused gather-attention for decode: one Triton kernel reads only the listed keys and values.

The selection of a query chunk is flattened into one index list per (row, selection head,
query): int32 (B, Hsel, Qc, N), −1 marking padding. The kernel splits each list into
``splits`` pieces (flash-decoding): every program loads the G query heads of its selection
head, walks its piece in blocks of BLOCK_N listed keys, gathers those key and value rows
straight from the cache (no gathered copy) and keeps an online softmax; a few torch
operations then merge the pieces, add sink logits and zero the empty rows, exactly as
:func:`maskgraph.sparse.gather.attend_parts` does.

Used on CUDA when Triton is importable; the CPU keeps the torch path. Tests run the kernel on
the CPU through Triton's interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..kernels import FUSED, jitted
from ..lowering.indexset import Part, expand_heads
from ..triton_util import interpreting, pdl, triton_installed

NEG_INF = float("-inf")
#: Listed keys per loop step of ``gather_decode`` (32 gathers short rows faster alone but makes
#: the whole call slower).
BLOCK_N = 64
#: Programs aimed for per launch (four per streaming multiprocessor of an H100), twice that
#: from MANY_ROWS rows on (more programs pay off for many rows, not for one).
TARGET_PROGRAMS = 528
MANY_ROWS = 32
#: Warps per ``gather_decode`` program, and its software-pipelining stages (None: Triton's
#: default, 3): 2 is the fastest of 1–4 at B=1.
NUM_WARPS = 4
NUM_STAGES: int | None = 2
#: Programs per (row, query head) of ``merge_splits``, each merging dp / MERGE_PARTS channels
#: (4 beats 1 at every key count).
MERGE_PARTS = 4


def available(device: torch.device) -> bool:
    """True when the fused kernel can run on ``device`` (CUDA with Triton installed)."""
    return device.type == "cuda" and triton_installed()


#: Runs the kernel reads without a list (sink and window: two).
MAX_RUNS = 2


@dataclass(frozen=True)
class Selection:
    """What ``gather_decode`` reads for one query chunk: per row, the keys of ``runs`` then the
    listed entries (see ``maskgraph.kernels.fused._keys``).

    ``runs``: up to MAX_RUNS (start, length, lo, hi, slope): the slice start … start + length − 1
    of which query q keeps lo + slope·q ≤ j < hi + slope·q; ``idx`` (b, h, Qc, n) int32/int64
    listed entries or None; ``vals`` float32 like ``idx`` (kept where > −inf) or None (kept
    where ``idx`` ≥ 0); ``page``: keys per entry; ``heads``: Hsel, the selection heads.
    """

    runs: tuple[tuple[Any, Any, Any, Any, int], ...]
    idx: torch.Tensor | None
    vals: torch.Tensor | None
    page: int
    heads: int

    @property
    def width(self):
        """Virtual entries per row: the runs' lengths and every listed entry's keys (the
        runs' total rounded up to a multiple of the page under :attr:`entry_rows`)."""
        n = sum(r[1] for r in self.runs)
        if self.idx is None:
            return n
        if self.entry_rows:
            n = -(-n // self.page) * self.page
        return n + self.idx.shape[-1] * self.page

    @property
    def entry_rows(self) -> bool:
        """Whether ``gather_decode`` loads each listed page's index and value once for its keys
        rather than once a key (pages of a power of two keys dividing BLOCK_N; the listed
        entries then start page-aligned)."""
        page = self.page
        return self.idx is not None and 1 < page <= BLOCK_N and page & (page - 1) == 0

    def fields(self) -> tuple:
        """The selection as plain values (what a compiled function returns); the inverse of
        :meth:`from_fields`."""
        return (self.runs, self.idx, self.vals, self.page, self.heads)

    @classmethod
    def from_fields(cls, fields: tuple) -> Selection:
        return cls(*fields)


def from_lists(lists: torch.Tensor) -> Selection:
    """int32 lists (B, Hsel, Qc, N) of :func:`index_lists` as a Selection."""
    return Selection((), lists, None, 1, lists.shape[1])


def kernel_selection(parts: list[Part], hkv: int, hq: int) -> Selection | None:
    """The parts of an IndexSet as the kernel reads them without building lists: at most
    MAX_RUNS runs with int starts, then one page selection whose prior's runs are among them;
    None otherwise (lists are then built)."""
    runs, listed, seen = [], None, set()
    for part in parts:
        if part.span is not None and part.run is not None and listed is None:
            start, length = part.span
            if isinstance(start, torch.Tensor):
                return None
            runs.append((start, length, *part.run))
            seen.add(part.source)
        elif part.span is None and part.listed is not None and listed is None:
            listed = part.listed
        else:
            return None
    # only page selections gain (the lists expand every page): runs alone and key selections
    # read faster from int32 lists
    if len(runs) > MAX_RUNS or listed is None or not listed.prior_spans <= seen or listed.page == 1:
        return None
    heads = hq if listed.idx.shape[1] == hq else hkv
    return Selection(tuple(runs), listed.idx, listed.vals, listed.page, heads)


def index_lists(
    spans: list[tuple], gathered: tuple[torch.Tensor, torch.Tensor] | None, b: int, hkv: int, hq: int, qc: int
) -> torch.Tensor:
    """All parts of a selection as one list: int32 (B, Hsel, Qc, N), −1 where not attended.

    ``spans``: (start, length, valid) runs, valid broadcastable to (B, h, Qc, length);
    ``gathered``: (idx, valid) (B, Hsel, Qc, n). Hsel is the widest head count among the
    parts (Hkv when no part depends on the query head).
    """
    heads = [v.shape[1] for _, _, v in spans]
    if gathered is not None:
        heads.append(gathered[0].shape[1])
    hsel = hq if hq in heads else hkv
    lead = (b, hsel, qc)
    pieces = []
    for start, length, valid in spans:
        pos = start + torch.arange(length, device=valid.device, dtype=torch.int32).view(1, 1, 1, -1)
        pos = pos.to(torch.int32)  # a tensor start (static buffer) is int64
        valid = expand_heads(valid, hsel)  # Hkv-wide validity under per-head lists
        pieces.append(torch.where(valid, pos, -1).expand(*lead, length))
    if gathered is not None:
        idx, valid = gathered
        pieces.append(torch.where(valid, idx.to(torch.int32), -1).expand(*lead, idx.shape[-1]))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)


def _splits(rows: int, n: int) -> tuple[int, int]:
    """(splits, blocks per split) so that rows · splits ≈ TARGET_PROGRAMS (twice that from
    MANY_ROWS rows on)."""
    blocks = max(1, -(-n // BLOCK_N))
    target = TARGET_PROGRAMS * (2 if rows >= MANY_ROWS else 1)
    want = max(1, min(blocks, -(-target // max(rows, 1))))
    per = -(-blocks // want)
    return -(-blocks // per), per


def fused_gather_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    lists: torch.Tensor | Selection,
    sinks: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    counter: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of each query over its listed keys: two kernel launches (attend over
    the pieces of each list, merge the pieces).

    queries (B, Hq, Qc, D); keys, values (B, Hkv, K, D), last dimension contiguous;
    attention_mask additive, broadcastable to (B, Hq, Qc, K), or None; ``lists``: int32
    (B, Hsel, Qc, N) from :func:`index_lists`, Hsel ∈ {Hkv, Hq}, entries distinct where ≥ 0, or
    a :class:`Selection` (runs and a selection read without lists);
    sinks (Hq,) optional sink logits; ``counter``: a 0-d int64 tensor on the queries' device
    to which the kernel adds, in place, the rows with no attended key (no extra launch; a new
    zero counter when None). Returns out (B, Hq, Qc, D) in ``out_dtype`` (zeros on such a row;
    a transposed view of a (B, Qc, Hq, D) tensor) and the counter.
    """
    sel = lists if isinstance(lists, Selection) else from_lists(lists)
    b, hq, qc, d = queries.shape
    g = hq // sel.heads
    dp = max(16, 1 << (d - 1).bit_length())
    queries, keys, values = (t if t.stride(-1) == 1 else t.contiguous() for t in (queries, keys, values))
    acc, m, den = _gather(queries, keys, values, attention_mask, scaling, sel)
    rows, splits = acc.shape[:2]
    # laid out (B, Qc, Hq, D), transformers' order: its transpose back is then free
    out = torch.empty(b, qc, hq, d, device=queries.device, dtype=out_dtype).transpose(1, 2)
    if counter is None:
        counter = torch.zeros((), device=queries.device, dtype=torch.int64)
    elif counter.dtype != torch.int64 or counter.dim() != 0 or counter.device != queries.device:
        raise ValueError(
            f"counter must be a 0-d int64 tensor on {queries.device}, got {tuple(counter.shape)} "
            f"{counter.dtype} on {counter.device}"
        )
    parts = max(1, min(MERGE_PARTS, dp // 16))
    jitted(FUSED, "merge_splits")[(rows * g, parts)](
        acc, m, den, sinks if sinks is not None else m, out, counter,
        splits, g, sel.heads, qc, d,
        *out.stride()[:3],
        HAS_SINKS=sinks is not None, BLOCK_S=min(64, max(2, 1 << (splits - 1).bit_length())),
        DP=dp // parts, num_warps=4, **pdl(queries.device, rows * g * parts),
    )  # fmt: skip
    return out, counter


def _partials(rows: int, splits: int, g: int, d: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Empty (acc (rows, splits, G, D), max (rows, splits, G), sum (rows, splits, G)) float32."""
    acc = torch.empty(rows, splits, g, d, device=device, dtype=torch.float32)
    m = torch.empty(rows, splits, g, device=device, dtype=torch.float32)
    return acc, m, torch.empty_like(m)


def _wide(keys: torch.Tensor, values: torch.Tensor) -> bool:
    """Whether a key's element offset in its (batch, head) slab may pass 2**31 (the kernels
    then compute 64-bit offsets; 32-bit ones keep their programs from spilling registers)."""
    return keys.shape[2] * max(keys.stride(2), values.stride(2), 1) >= 2**31


def _run_args(sel: Selection) -> list[int]:
    """The kernels' ten run scalars: (start, length, lo, hi, slope) per run, zeros past NR."""
    runs = [(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in sel.runs]
    return [v for r in runs for v in r] + [0] * (5 * (MAX_RUNS - len(runs)))


def _mask_args(attention_mask: torch.Tensor | None, queries: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """(the additive mask broadcast to (B, Hq, Qc, K), its strides) as the kernels read it; a
    stand-in tensor and zero strides without one."""
    if attention_mask is None:
        return queries, (0, 0, 0, 0)
    b, hq, qc, _ = queries.shape
    am = attention_mask.expand(b, hq, qc, attention_mask.shape[-1])
    return am, am.stride()


def _mask_kind(attention_mask: torch.Tensor | None, strides: tuple) -> int:
    """The kernels' HAS_AM: 0 without a mask, 1 for one mask row shared by every head (what
    transformers passes: (B, 1, Q, K)), 2 for a row per head."""
    if attention_mask is None:
        return 0
    return 2 if strides[1] != 0 else 1


def _gather(queries, keys, values, attention_mask, scaling, sel: Selection) -> tuple[torch.Tensor, ...]:
    """``gather_decode`` over the selection's runs and listed entries: the partials (acc, max,
    sum) of :func:`_partials`."""
    b, hq, qc, d = queries.shape
    hkv, hsel, n = keys.shape[1], sel.heads, int(sel.width)
    g = hq // hsel
    gp = max(16, 1 << (g - 1).bit_length())
    dp = max(16, 1 << (d - 1).bit_length())
    lead = (b, hsel, qc)
    idx = sel.idx if sel.idx is not None else queries.new_full((1, 1, 1, 1), -1, dtype=torch.int32)
    idx = idx.expand(*lead, idx.shape[-1])
    if idx.stride(-1) != 1:
        idx = idx.contiguous()
    vals = sel.vals.expand(*lead, sel.vals.shape[-1]) if sel.vals is not None else None
    if vals is not None and vals.stride(-1) != 1:
        vals = vals.contiguous()
    rows = b * hsel * qc
    splits, per = _splits(rows, n)
    acc, m, den = _partials(rows, splits, g, d, queries.device)
    am, am_strides = _mask_args(attention_mask, queries)
    gather = jitted(FUSED, "gather_decode")
    gather[(rows, splits)](
        queries, keys, values, idx, vals if vals is not None else m, am, acc, m, den,
        float(scaling), n, per, keys.shape[2],
        *queries.stride()[:3],
        *keys.stride()[:3],
        *values.stride()[:3],
        *idx.stride()[:3],
        *(vals.stride()[:3] if vals is not None else (0, 0, 0)),
        *am_strides,
        hsel, qc, hkv, g, d,
        *_run_args(sel),
        HAS_AM=_mask_kind(attention_mask, am_strides),
        UPCAST=interpreting() and keys.dtype == torch.bfloat16,
        GP=gp, BLOCK=BLOCK_N, DP=dp, NR=len(sel.runs), PAGE=sel.page, HAS_VALS=vals is not None,
        WIDE=_wide(keys, values), ENTRY_ROWS=sel.entry_rows,
        num_warps=NUM_WARPS, **({} if NUM_STAGES is None else {"num_stages": NUM_STAGES}),
        **pdl(queries.device, rows * splits),
    )  # fmt: skip
    return acc, m, den
