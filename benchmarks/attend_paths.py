"""The pieces of one simulate-mode decode call, timed alone: what the per-token table is made of.

    python benchmarks/attend_paths.py            # GPU: B=1, 32/8 heads, D=128, bf16, Q=1
    python benchmarks/attend_paths.py --quick    # CPU: tiny shapes, checks the script runs

For each key count K and K+1 (a DynamicCache grows by one key a step, so both parities occur):
the scaled logits q·kᵀ, the weighted sum of values, and the whole attention over a probability
mask, each by the library's function and by dense flash SDPA, median ms from one run. A row
whose K and K+1 times differ by more than 10 % is a cliff.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import device_name, flash_sdpa, report, time_call  # noqa: E402

import maskgraph as mg  # noqa: E402
from maskgraph.attention import attend, gqa_logits, gqa_weighted_sum  # noqa: E402


def cases(device: torch.device, dtype: torch.dtype, K: int, hq: int, hkv: int, d: int):
    q = torch.randn(1, hq, 1, d, device=device, dtype=dtype)
    k = torch.randn(1, hkv, K, d, device=device, dtype=dtype)
    v = torch.randn(1, hkv, K, d, device=device, dtype=dtype)
    logits = gqa_logits(q, k, d**-0.5)
    w = torch.rand(1, hq, 1, K, device=device)
    ones = torch.ones(1, 1, 1, K, device=device)

    def sdpa():
        with flash_sdpa():
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    return {
        "logits": lambda: gqa_logits(q, k, d**-0.5),
        "weighted_sum": lambda: gqa_weighted_sum(w, v),
        "attend": lambda: attend(logits, ones, v),
        "logits+attend": lambda: attend(gqa_logits(q, k, d**-0.5), ones, v),
        "sdpa (flash)": sdpa,
    }, (q, k, v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--contexts", nargs="*", type=int, default=[32768, 131072])
    ap.add_argument("--graphs", nargs="*", default=["dense", "streaming_llm"])
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    hq, hkv, d = (32, 8, 128) if not args.quick else (4, 2, 16)
    contexts = args.contexts if not args.quick else [256]
    compiled = {
        g: mg.compile(g, backend="inductor" if device.type == "cuda" else "eager") for g in args.graphs
    }
    rows = []
    for ctx in contexts:
        for K in (ctx, ctx + 1):
            fns, (q, k, v) = cases(device, dtype, K, hq, hkv, d)
            for g, attn in compiled.items():
                fns[f"mg.compile({g})"] = lambda attn=attn: attn(q, k, v)
            for name, fn in fns.items():
                ms = time_call(fn, device, warmup=5, reps=30)
                rows.append(dict(piece=name, K=K, ms=ms))
                print(rows[-1], flush=True)
    by = {(r["piece"], r["K"]): r["ms"] for r in rows}
    table = []
    for ctx in contexts:
        sdpa = by[("sdpa (flash)", ctx)]
        for piece in dict.fromkeys(r["piece"] for r in rows):
            a, b = by[(piece, ctx)], by[(piece, ctx + 1)]
            table.append(dict(piece=piece, K=ctx, ms_K=a, ms_K1=b, x_sdpa=max(a, b) / sdpa, cliff=b / a))
    report(
        "attend_paths",
        table,
        ["piece", "K", "ms_K", "ms_K1", "x_sdpa", "cliff"],
        f"simulate pieces at Q=1, {hq}/{hkv} heads, D={d}, {dtype}",
        False,
        device=device_name(device),
    )


if __name__ == "__main__":
    main()
