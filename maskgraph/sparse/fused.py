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

import torch

from ..triton_util import interpreting, jitted, pdl, triton_installed
from .indexset import expand_heads

NEG_INF = float("-inf")
#: Listed keys per loop step of ``gather_decode``.
BLOCK_N = 64
#: Programs aimed for per launch (four per streaming multiprocessor of an H100), twice that
#: from MANY_ROWS rows on (benchmarks/kernels.py, run 17: B=8 at 10 % 0.20 -> 0.16 ms; B=1
#: 0.037 ms with 528, 0.041 ms with 1056).
TARGET_PROGRAMS = 528
MANY_ROWS = 32
#: Warps per ``gather_decode`` program, and its software-pipelining stages (None: Triton's
#: default, 3): 2 measured 1–2 µs faster per B=1 call at 128K than 1, 3 or 4 (H200, run 51).
NUM_WARPS = 4
NUM_STAGES: int | None = 2


def available(device: torch.device) -> bool:
    """True when the fused kernel can run on ``device`` (CUDA with Triton installed)."""
    return device.type == "cuda" and triton_installed()


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
    lists: torch.Tensor,
    sinks: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    counter: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention of each query over its listed keys: two kernel launches (attend over
    the pieces of each list, merge the pieces).

    queries (B, Hq, Qc, D); keys, values (B, Hkv, K, D), last dimension contiguous;
    attention_mask additive, broadcastable to (B, Hq, Qc, K), or None; lists int32
    (B, Hsel, Qc, N) from :func:`index_lists`, Hsel ∈ {Hkv, Hq}, entries distinct where ≥ 0;
    sinks (Hq,) optional sink logits; ``counter``: a 0-d int64 tensor on the queries' device
    to which the kernel adds, in place, the rows with no attended key (no extra launch; a new
    zero counter when None). Returns out (B, Hq, Qc, D) in ``out_dtype`` (zeros on such a row;
    a transposed view of a (B, Qc, Hq, D) tensor) and the counter.
    """
    b, hq, qc, d = queries.shape
    hkv, hsel, n = keys.shape[1], lists.shape[1], lists.shape[-1]
    g = hq // hsel
    gp = max(16, 1 << (g - 1).bit_length())
    dp = max(16, 1 << (d - 1).bit_length())
    queries, keys, values = (t if t.stride(-1) == 1 else t.contiguous() for t in (queries, keys, values))
    lists = lists.contiguous()
    rows = b * hsel * qc
    splits, per = _splits(rows, n)
    acc = torch.empty(rows, splits, g, d, device=queries.device, dtype=torch.float32)
    m = torch.empty(rows, splits, g, device=queries.device, dtype=torch.float32)
    den = torch.empty_like(m)
    if attention_mask is not None:
        am = attention_mask.expand(b, hq, qc, attention_mask.shape[-1])
        am_strides = am.stride()
    else:
        am, am_strides = lists, (0, 0, 0, 0)
    gather = jitted("maskgraph.sparse.fused_kernel", "gather_decode")
    merge = jitted("maskgraph.sparse.fused_kernel", "merge_splits")
    gather[(rows, splits)](
        queries, keys, values, lists, am, acc, m, den,
        float(scaling), n, per,
        *queries.stride()[:3],
        *keys.stride()[:3],
        *values.stride()[:3],
        *lists.stride()[:3],
        *am_strides,
        hsel, qc, hkv, g, d,
        HAS_AM=attention_mask is not None,
        UPCAST=interpreting() and keys.dtype == torch.bfloat16,
        GP=gp, BLOCK=BLOCK_N, DP=dp,
        num_warps=NUM_WARPS, **({} if NUM_STAGES is None else {"num_stages": NUM_STAGES}),
        **pdl(queries.device, rows * splits),
    )  # fmt: skip
    # laid out (B, Qc, Hq, D), transformers' order: its transpose back is then free
    out = torch.empty(b, qc, hq, d, device=queries.device, dtype=out_dtype).transpose(1, 2)
    if counter is None:
        counter = torch.zeros((), device=queries.device, dtype=torch.int64)
    elif counter.dtype != torch.int64 or counter.dim() != 0 or counter.device != queries.device:
        raise ValueError(
            f"counter must be a 0-d int64 tensor on {queries.device}, got {tuple(counter.shape)} "
            f"{counter.dtype} on {counter.device}"
        )
    merge[(rows * g,)](
        acc, m, den, sinks if sinks is not None else m, out, counter,
        splits, g, hsel, qc, d,
        *out.stride()[:3],
        HAS_SINKS=sinks is not None, BLOCK_S=min(64, max(2, 1 << (splits - 1).bit_length())), DP=dp,
        num_warps=4, **pdl(queries.device, rows * g),
    )  # fmt: skip
    return out, counter
