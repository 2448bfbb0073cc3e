"""The sparse decode kernels one at a time, against what they replace, on the issue's shape.

    python benchmarks/kernel_times.py            # GPU: ~1 min on an H100
    python benchmarks/kernel_times.py --quick    # CPU (Triton's interpreter): tiny shapes, checks the script

32 query / 8 KV heads, D=128, bf16, K=128K, B ∈ {1, 8}, every time per call in a CUDA graph of
ten back-to-back calls (common.CALLS_PER_GRAPH):

* ``topk``: the Triton top-k (:mod:`maskgraph.sparse.topk`, 7 launches) vs ``torch.topk`` and
  vs the lowest-index rule in torch (:func:`maskgraph.sparse.topk.topk_lowest`), over token
  scores (K per row) and Quest page scores (K/16 per row), k = 2 % and 10 %;
* ``quest_scores``: Quest's grouped page-score kernel vs the two bf16 matrix products and
  group max it replaces;
* ``small`` (not by default): top-k over short rows (Quest's pages, an 8K context's keys) by
  each one-program kernel and by the segments, to place ``SMALL_MAX``;
* ``gather``: ``fused_gather_attention`` over random lists of 2 % and 10 % of K for a few
  (BLOCK_N, programs, warps) settings, against flash SDPA over all K;
* ``forms`` (not by default): the same number of keys read in each form the kernel takes —
  int32 key lists (sorted, shuffled), random pages of 16 keys as key lists, as page entries,
  with the top-k's values, with the sink and window runs — one selection a KV head (shared)
  and one a query head (per head), for each of the gather settings, against flash SDPA.

Prints a table last and writes kernels.json to $OUT (or the current folder).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

if "--quick" in sys.argv and not os.environ.get("CUDA_VISIBLE_DEVICES"):
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import device_name, flash_sdpa, graph_ms, print_table, write_json  # noqa: E402

from maskgraph.env import Env  # noqa: E402
from maskgraph.ops.zoo import quest  # noqa: E402
from maskgraph.ops.zoo.quest import _quest_group_scores, quest_sparse_scores  # noqa: E402
from maskgraph.sparse import fused  # noqa: E402
from maskgraph.sparse import topk as triton_topk  # noqa: E402
from maskgraph.sparse.topk import (
    select_topk,  # noqa: E402
    topk_lowest,  # noqa: E402
)

COLUMNS = ["kernel", "variant", "B", "rows", "N", "k", "ms", "x_ref", "ref"]


def with_settings(module, settings: dict, fn):
    """``fn()`` with the module constants in ``settings`` set for the call."""
    saved = {name: getattr(module, name) for name in settings}
    for name, value in settings.items():
        setattr(module, name, value)
    try:
        return fn()
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def topk_rows(b: int, hkv: int, n: int, density: float, device, args) -> list[dict]:
    """Top-k over (b·hkv, n) float32 scores: three ways, the torch.topk time as reference."""
    scores = torch.randn(b * hkv, n, device=device)
    k = max(1, int(density * n))
    ways = {
        "torch.topk": lambda: torch.topk(scores, k, dim=-1, sorted=False),
        "topk_lowest (torch)": lambda: topk_lowest(scores, k, triton=False),
        "select_topk (triton)": lambda: select_topk(scores, k),
    }
    variants = {"BINS=64": {"BINS": 64}, "BINS=256": {"BINS": 256}}
    if n <= triton_topk.SMALL_MAX:  # the segment launches, for comparison
        variants["segments"] = {"SMALL_MAX": 0}
    for label, settings in variants.items():
        ways[f"select_topk {label} (triton)"] = lambda settings=settings: with_settings(
            triton_topk, settings, lambda: select_topk(scores, k)
        )
    want = set(topk_lowest(scores, k, triton=False)[1][0].tolist())
    assert set(select_topk(scores, k)[1][0].tolist()) == want, "select_topk differs from the rule"
    rows, ref = [], None
    for name, fn in ways.items():
        ms, _ = graph_ms(fn, device, args.warmup, args.reps)
        ref = ref or ms
        rows.append(dict(kernel="topk", variant=name, B=b, rows=b * hkv, N=n, k=k, ms=ms, x_ref=ms / ref))
    for row in rows:
        row["ref"] = "torch.topk"
    return rows


#: Ways of selecting a short row (one program per row, or the segment launches).
SMALL_WAYS = {
    "select_small (1 program)": {"SMALL_MAX": 1 << 20},
    "segments (7 launches)": {"SMALL_MAX": 0},
}


def small_rows(rows: int, n: int, density: float, device, args) -> list[dict]:
    """Top-k over (rows, n) scores by each one-program kernel and by the segments, with
    torch.topk as reference: where the one-program path should stop (``SMALL_MAX``)."""
    scores = torch.randn(rows, n, device=device)
    k = max(1, int(density * n))
    want = set(topk_lowest(scores, k, triton=False)[1][0].tolist())
    out = []
    ms_ref, _ = graph_ms(lambda: torch.topk(scores, k, dim=-1, sorted=False), device, args.warmup, args.reps)
    out.append(
        dict(
            kernel="topk_small", variant="torch.topk", B=rows // 8, rows=rows, N=n, k=k, ms=ms_ref, x_ref=1.0
        )
    )
    for label, settings in SMALL_WAYS.items():
        if label.startswith("select_small") and n > 16384:
            continue  # 32K lanes in one program's registers: not a candidate
        fn = lambda settings=settings: with_settings(triton_topk, settings, lambda: select_topk(scores, k))  # noqa: E731
        assert set(fn()[1][0].tolist()) == want, f"{label} differs from the rule"
        ms, _ = graph_ms(fn, device, args.warmup, args.reps)
        out.append(
            dict(
                kernel="topk_small", variant=label, B=rows // 8, rows=rows, N=n, k=k, ms=ms, x_ref=ms / ms_ref
            )
        )
    for row in out:
        row["ref"] = "torch.topk"
    return out


#: (tensor-core form, pages per program, warps) of Quest's grouped page scores.
QUEST_WAYS = [
    (False, 32, 4),
    (False, 64, 8),
    (False, 16, 2),
    (True, 32, 4),
    (True, 64, 4),
    (True, 128, 4),
    (True, 128, 8),
    (True, 256, 8),
]


def quest_rows(b: int, hq: int, hkv: int, pages: int, d: int, device, args) -> list[dict]:
    """Grouped Quest page scores: the Triton kernel vs two bf16 products and the group max."""
    q = torch.randn(b, hq, 1, d, device=device, dtype=torch.bfloat16)
    lo = torch.randn(b, hkv, pages, d, device=device, dtype=torch.bfloat16)
    hi = lo + 1
    g = hq // hkv

    keys = lo.new_empty(b, hkv, 1, d).expand(b, hkv, pages * 16, d)  # only its shape is read
    env = Env(q, keys, keys, None, 1.0, torch.tensor([pages * 16 - 1], device=device), 0)
    prep = {"lo": lo, "hi": hi}

    def torch_way():
        scores = quest_sparse_scores(env, prep, page_size=16, label_bits=16).scores
        return scores.view(b, hkv, g, 1, pages).amax(2)

    ways = [("bmm + amax (torch)", torch_way)]
    for dot, block, warps in QUEST_WAYS:
        settings = {
            "QUEST_DOT_BLOCK" if dot else "QUEST_BLOCK": block,
            "QUEST_WARPS": warps,
            "_quest_dot": lambda *inputs, dot=dot: dot,  # the form this row times
        }
        ways.append(
            (
                f"quest_group_scores{' dot' if dot else ''} BLOCK={block} warps={warps}",
                lambda settings=settings: with_settings(
                    quest, settings, lambda: _quest_group_scores(q, lo, hi, 1.0, lo.shape[1])
                ),
            )
        )
    rows = []
    ref = None
    for name, fn in ways:
        ms, _ = graph_ms(fn, device, args.warmup, args.reps)
        ref = ref or ms
        rows.append(
            dict(
                kernel="quest_scores",
                variant=name,
                B=b,
                rows=b * hkv,
                N=pages,
                k="-",
                ms=ms,
                x_ref=ms / ref,
                ref="bmm",
            )
        )
    return rows


def decode_inputs(b: int, hq: int, hkv: int, kk: int, d: int, device) -> tuple:
    """(a generator seeded with b, queries (B, Hq, 1, D), keys and values (B, Hkv, K, D)) bf16."""
    gen = torch.Generator(device=device).manual_seed(b)
    q = torch.randn(b, hq, 1, d, device=device, dtype=torch.bfloat16, generator=gen)
    k = torch.randn(b, hkv, kk, d, device=device, dtype=torch.bfloat16, generator=gen)
    return gen, q, k, torch.randn_like(k)


def gather_rows(b: int, hq: int, hkv: int, kk: int, d: int, density: float, device, args) -> list[dict]:
    """fused_gather_attention over random lists, a few launch settings, vs flash SDPA."""
    gen, q, k, v = decode_inputs(b, hq, hkv, kk, d, device)
    n = max(1, int(density * kk))
    # ascending, as the top-k writes most of its picks (index order within each segment)
    lists = (
        torch.rand(b, hkv, 1, kk, device=device, generator=gen).topk(n, dim=-1).indices.sort(-1).values.int()
    )
    with flash_sdpa():
        dense, _ = graph_ms(
            lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), device, args.warmup, args.reps
        )
    rows = [
        dict(kernel="gather", variant="flash SDPA (all K)", B=b, rows=b * hkv, N=kk, k=n, ms=dense, x_ref=1.0)
    ]
    fn = lambda: fused.fused_gather_attention(q, k, v, None, d**-0.5, lists, None, q.dtype)  # noqa: E731
    for block, programs, warps, stages in args.gather_configs:
        settings = dict(BLOCK_N=block, TARGET_PROGRAMS=programs, NUM_WARPS=warps, NUM_STAGES=stages)
        ms, _ = with_settings(fused, settings, lambda: graph_ms(fn, device, args.warmup, args.reps))
        variant = f"gather_decode BLOCK_N={block} programs={programs} warps={warps} stages={stages or '-'}"
        rows.append(
            dict(kernel="gather", variant=variant, B=b, rows=b * hkv, N=kk, k=n, ms=ms, x_ref=ms / dense)
        )
    for row in rows:
        row["ref"] = "SDPA"
    return rows


def forms_rows(b: int, hq: int, hkv: int, kk: int, d: int, density: float, device, args) -> list[dict]:
    """``fused_gather_attention`` over one share of K in each selection form, shared and per head."""
    gen, q, k, v = decode_inputs(b, hq, hkv, kk, d, device)
    page = 16
    with flash_sdpa():
        dense, _ = graph_ms(
            lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), device, args.warmup, args.reps
        )
    rows = [
        dict(kernel="forms", variant="flash SDPA (all K)", B=b, rows=b * hkv, N=kk, k=kk, ms=dense, x_ref=1.0)
    ]
    sink, window = 4, 64
    runs = ((0, sink, 0, sink, 0), (kk - window, window, kk - window, kk, 0))
    for hsel, gqa in ((hkv, "shared"), (hq, "per_head")):
        n = max(1, int(density * kk))
        npages = max(1, n // page)

        def pick(count: int, total: int) -> torch.Tensor:
            return torch.rand(b, hsel, 1, total, device=device, generator=gen).topk(count, dim=-1).indices

        keys = pick(n, kk).sort(-1).values
        shuffled = keys[..., torch.randperm(n, device=device, generator=gen)]
        pages = pick(npages, kk // page).sort(-1).values
        expanded = (pages[..., None] * page + torch.arange(page, device=device)).flatten(-2)
        vals = torch.zeros(pages.shape, device=device)
        forms = {
            "keys sorted (int32 list)": keys.int(),
            "keys shuffled (int32 list)": shuffled.int(),
            "pages as a key list": expanded.int(),
            "pages": fused.Selection((), pages, None, page, hsel),
            "pages + values": fused.Selection((), pages, vals, page, hsel),
            "pages + values + 2 runs": fused.Selection(runs, pages, vals, page, hsel),
            "2 runs alone": fused.Selection(runs, None, None, 1, hsel),
        }
        for name, sel in forms.items():
            for block, programs, warps, stages in args.gather_configs:
                settings = dict(BLOCK_N=block, TARGET_PROGRAMS=programs, NUM_WARPS=warps, NUM_STAGES=stages)
                fn = lambda sel=sel: fused.fused_gather_attention(q, k, v, None, d**-0.5, sel, None, q.dtype)  # noqa: E731
                ms, _ = with_settings(
                    fused, settings, lambda fn=fn: graph_ms(fn, device, args.warmup, args.reps)
                )
                width = sel.shape[-1] if isinstance(sel, torch.Tensor) else sel.width
                rows.append(
                    dict(
                        kernel=f"forms {gqa}",
                        variant=f"{name}; {block}x{programs}x{warps}x{stages or '-'}",
                        B=b,
                        rows=b * hsel,
                        N=kk,
                        k=width,
                        ms=ms,
                        x_ref=ms / dense,
                    )
                )
    for row in rows:
        row["ref"] = "SDPA"
    return rows


def parse_config(text: str) -> tuple[int, int, int, int | None]:
    """'64x528x4' or '64x528x4x3' -> (keys per step, programs, warps, stages or None)."""
    try:
        parts = [int(x) for x in text.split("x")]
        if len(parts) not in (3, 4):
            raise ValueError(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected BLOCKxPROGRAMSxWARPS[xSTAGES] such as 64x528x4 or 64x528x4x3, got {text!r}"
        ) from exc
    return (*parts, None) if len(parts) == 3 else tuple(parts)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny shapes on the CPU (Triton's interpreter)")
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    ap.add_argument("--kv-len", type=int, default=131072)
    ap.add_argument("--densities", nargs="*", type=float, default=[0.02, 0.10])
    ap.add_argument(
        "--gather-configs",
        nargs="*",
        type=parse_config,
        default=[
            parse_config(c) for c in ("64x528x4x2", "64x528x4x3", "64x528x4x1", "32x1056x4x2", "128x264x8x2")
        ],
        metavar="BxPxW[xS]",
        help="gather_decode settings (the gather and forms parts): keys per step x programs aimed for x "
        "warps [x pipelining stages; none: Triton's default]; the first default is the shipped one",
    )
    ap.add_argument(
        "--parts",
        nargs="*",
        default=["topk", "gather", "quest_scores"],
        choices=["topk", "gather", "quest_scores", "small", "forms"],
        help="which kernels to time",
    )
    ap.add_argument(
        "--small-lens",
        nargs="*",
        type=int,
        default=[512, 1024, 2048, 4096, 8192, 16384, 32768],
        help="row lengths of the 'small' part (one-program top-k vs segments)",
    )
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    hq, hkv, d, kk = 32, 8, 128, args.kv_len
    if args.quick:
        hq, hkv, d, kk = 4, 2, 16, 2000
        args.batches, args.warmup, args.reps = [2], 1, 2
        args.small_lens = [300, 1500]
        args.gather_configs = args.gather_configs[:2]
    print(f"device: {device_name(device)}; torch {torch.__version__}", flush=True)
    rows: list[dict] = []
    for b in args.batches:
        for density in args.densities:
            if "topk" in args.parts:
                rows += topk_rows(b, hkv, kk, density, device, args)
                rows += topk_rows(b, hkv, kk // 16, density, device, args)
            if "gather" in args.parts:
                rows += gather_rows(b, hq, hkv, kk, d, density, device, args)
            if "forms" in args.parts:
                rows += forms_rows(b, hq, hkv, kk, d, density, device, args)
        if "quest_scores" in args.parts:
            rows += quest_rows(b, hq, hkv, kk // 16, d, device, args)
        if "small" in args.parts:
            for n in args.small_lens:
                for density in args.densities:
                    rows += small_rows(b * hkv, n, density, device, args)
        print(f"B={b} done", flush=True)
    payload = dict(
        benchmark="kernels",
        device=device_name(device),
        date=datetime.date.today().isoformat(),
        torch=torch.__version__,
        rows=rows,
    )
    path = write_json("kernels.json", payload)
    print(
        f"\n## sparse decode kernels — {payload['device']}, {payload['date']}; x_ref = ms / ref ms (same run)"
    )
    print_table(rows, COLUMNS)
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
