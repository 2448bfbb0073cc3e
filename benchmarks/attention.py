"""Per-call attention benchmark: dense SDPA vs each graph (simulate mode), compiled and eager.

    python benchmarks/attention.py                 # GPU: the issue's shapes
    python benchmarks/attention.py --quick         # CPU: tiny shapes, checks the script runs

B=1, 32 query / 8 KV heads, D=128, bf16, K in {8K, 32K, 128K}, Q in {1, 128}. For every case:
median time (CUDA events) after warm-up, peak extra memory, and ratios to dense SDPA and to the
eager path, all from one run. Prints a table last and writes attention.json to $OUT.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    TimeLimit,
    device_name,
    error_cell,
    flash_sdpa,
    out_of_time,
    peak_extra_mib,
    print_failure,
    print_table,
    stop_on_sigterm,
    time_call,
    write_json,
)  # noqa: E402

import maskgraph as mg  # noqa: E402
from maskgraph.cli.common import positive_int  # noqa: E402

DEFAULT_GRAPHS = [
    "dense",
    "streaming_llm",
    "oracle_topk",
    "oracle_topp",
    "quest",
    "pqcache",
    "socket",
    "random_sampling",
    "magicpig",
    "vattention",
]


def dense_sdpa(q, k, v):
    with flash_sdpa():
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)


def profile_case(name, K, Q, hq, hkv, d, dtype, device) -> None:
    """Print the kernels of one compiled call, most expensive first."""
    from torch.profiler import ProfilerActivity, profile

    q = torch.randn(1, hq, Q, d, device=device, dtype=dtype)
    k = torch.randn(1, hkv, K, d, device=device, dtype=dtype)
    v = torch.randn(1, hkv, K, d, device=device, dtype=dtype)
    fn = (lambda: dense_sdpa(q, k, v)) if name == "sdpa" else mg.compile(name, backend="inductor")
    call = fn if name == "sdpa" else (lambda: fn(q, k, v))
    for _ in range(5):
        call()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(10):
            call()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\n### profile {name} K={K} Q={Q} (10 calls)")
    print(prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=60))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny shapes (CPU smoke run)")
    ap.add_argument("--graphs", nargs="*", default=DEFAULT_GRAPHS)
    ap.add_argument("--keys", nargs="*", type=int, help="key counts (default 8K 32K 128K; --quick: 300 1000)")
    ap.add_argument("--queries", nargs="*", type=int, help="query counts (default 1 128; --quick: 1 8)")
    ap.add_argument("--no-eager", action="store_true", help="skip the eager path")
    ap.add_argument("--reps", type=positive_int, help="timed calls per case (default 30; --quick: 3)")
    ap.add_argument(
        "--cudagraphs",
        nargs="*",
        default=[],
        metavar="GRAPH",
        help="graphs also timed with torch.compile(mode='reduce-overhead') (CUDA graphs)",
    )
    ap.add_argument(
        "--profile",
        nargs=3,
        metavar=("GRAPH", "K", "Q"),
        action="append",
        help="print the top kernels of one case (repeatable)",
    )
    args = ap.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    hq, hkv, d, dtype = 32, 8, 128, torch.bfloat16
    if args.quick:
        hq, hkv, d = 4, 2, 16
    if args.keys is None:
        args.keys = [300, 1000] if args.quick else [8192, 32768, 131072]
    if args.queries is None:
        args.queries = [1, 8] if args.quick else [1, 128]
    if args.reps is None:
        args.reps = 3 if args.quick else 30
    torch.manual_seed(0)
    rows = []
    cache: dict[tuple, mg.CompiledAttention] = {}  # dynamic K: one compile per graph

    def get(name: str, backend: str, torch_mode: str | None = None) -> mg.CompiledAttention:
        if (name, backend, torch_mode) not in cache:
            cache[name, backend, torch_mode] = mg.compile(name, backend=backend, torch_mode=torch_mode)
        return cache[name, backend, torch_mode]

    shipped = mg.shipped_graphs()
    graphs = [g for g in args.graphs if g in shipped]
    print(
        f"device: {device_name(device)}; torch {torch.__version__}; graphs: {', '.join(graphs)}", flush=True
    )
    stop_on_sigterm()
    cut = False
    try:
        for K in args.keys:
            for Q in args.queries:
                q = torch.randn(1, hq, Q, d, device=device, dtype=dtype)
                k = torch.randn(1, hkv, K, d, device=device, dtype=dtype)
                v = torch.randn(1, hkv, K, d, device=device, dtype=dtype)
                t_dense = time_call(lambda: dense_sdpa(q, k, v), device, reps=args.reps)
                m_dense = peak_extra_mib(lambda: dense_sdpa(q, k, v), device)
                rows.append(dict(graph="dense SDPA", K=K, Q=Q, ms=t_dense, x_sdpa=1.0, mib=m_dense))
                print(f"K={K} Q={Q} dense SDPA {t_dense:.4f} ms", flush=True)
                for name in graphs:
                    if out_of_time():
                        raise TimeLimit()
                    row = dict(graph=name, K=K, Q=Q)
                    try:
                        compiled = get(name, "inductor")
                        t = time_call(lambda: compiled(q, k, v), device, warmup=3, reps=args.reps)
                        row.update(
                            ms=t, x_sdpa=t / t_dense, mib=peak_extra_mib(lambda: compiled(q, k, v), device)
                        )
                        if not args.no_eager:
                            eager = get(name, "eager")
                            te = time_call(
                                lambda: eager(q, k, v), device, warmup=2, reps=max(3, args.reps // 3)
                            )
                            row.update(eager_ms=te, x_eager=t / te)
                    except Exception as exc:  # one failing case must not kill the table
                        row["error"] = error_cell(exc, 80)
                        print_failure(f"{name} K={K} Q={Q}", limit=2)
                    rows.append(row)
                    print(row, flush=True)
                    if name in args.cudagraphs and device.type == "cuda":
                        row = dict(graph=f"{name} [cudagraphs]", K=K, Q=Q)
                        try:
                            cg = get(name, "inductor", "reduce-overhead")
                            t = time_call(lambda: cg(q, k, v), device, warmup=3, reps=args.reps)
                            row.update(
                                ms=t, x_sdpa=t / t_dense, mib=peak_extra_mib(lambda: cg(q, k, v), device)
                            )
                        except Exception as exc:
                            row["error"] = error_cell(exc, 80)
                        rows.append(row)
                        print(row, flush=True)
    except TimeLimit:
        cut = True
        print("time limit reached: the table below is partial", flush=True)
    for name, K, Q in args.profile or []:
        profile_case(name, int(K), int(Q), hq, hkv, d, dtype, device)
    payload = dict(
        benchmark="attention",
        device=device_name(device),
        date=datetime.date.today().isoformat(),
        torch=torch.__version__,
        shape=dict(B=1, Hq=hq, Hkv=hkv, D=d, dtype=str(dtype)),
        rows=rows,
    )
    write_json("attention.json", payload)
    print(f"\n## attention per call — {payload['device']}, {payload['date']}, torch {torch.__version__}")
    if cut:
        print("(partial: cut by the time limit)")
    print_table(rows, ["graph", "K", "Q", "ms", "x_sdpa", "eager_ms", "x_eager", "mib", "error"])


if __name__ == "__main__":
    main()
