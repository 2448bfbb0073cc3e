"""Sparse mode per attention call: dense SDPA vs ``mg.compile(graph, mode="sparse")``.

    python benchmarks/sparse.py --batches 1      # GPU: the issue's shapes at B=1 (inductor
                                                 # compiles every case: split the matrix)
    python benchmarks/sparse.py --quick          # CPU: tiny shapes, checks the script runs
    python benchmarks/sparse.py --graphs quest --batches 1 --kv-lens 131072 --backend eager

Decode (Q=1), B ∈ {1, 8}, 32 query / 8 KV heads, D=128, bf16, K ∈ {8K, 32K, 128K, 512K},
densities 2%, 5%, 10% (sink + window + heavy budget = density · K), GQA ``shared`` and
``per_head``. Per case: median time of the sparse runner (selection + gather + attention,
the decode step after the estimator caches are up to date), replayed as a CUDA graph of ten
back-to-back calls, per call (common.CALLS_PER_GRAPH; falls back
to plain calls if capture fails; the ``timing`` column says which), the whole call including
``prepare`` without a CUDA graph (``call_ms``), peak extra memory, the speed-up over dense SDPA
timed in the same run, and two lower bounds: bytes moved / 3.0 TB/s and FLOPs / 989 TFLOP/s.
Prints a table last and writes sparse.json to $OUT (or the current folder).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    add_set_argument,
    apply_settings,
    device_name,
    error_cell,
    graph_ms,
    median_ms,
    out_of_time,
    print_failure,  # noqa: E402
    print_table,
    write_json,
)

import maskgraph as mg  # noqa: E402

GRAPHS = ["streaming_llm", "quest", "hashattention", "double_sparsity", "pqcache"]
HBM_BYTES_PER_S = 3.0e12  # H100 SXM HBM3 (rounded)
BF16_FLOPS = 989e12  # H100 SXM dense bf16 tensor cores
COLUMNS = [
    "graph",
    "gqa",
    "B",
    "K",
    "density",
    "n",
    "ms",
    "speedup",
    "call_ms",
    "timing",
    "mib",
    "bytes_ms",
    "flops_ms",
    "x_bytes",
    "torch_ms",
    "vs_torch",
    "err",
    "error",
]


def peak_mib(fn, device: torch.device) -> float | None:
    """Peak memory allocated by one ``fn()`` beyond what was allocated before (MiB)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    out = fn()
    torch.cuda.synchronize(device)
    del out
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


# ----- cases ------------------------------------------------------------------------------------
def graph_params(name: str, budget: int, files: dict) -> dict:
    """Overrides giving ``budget`` attended keys: sink + window (+ heavy)."""
    if name == "streaming_llm":
        sink = max(1, min(128, budget // 4))
        return {"sink_size": sink, "window_size": max(1, budget - sink)}
    fixed = max(1, min(128, budget // 8))
    out = {"sink_size": fixed, "window_size": fixed, "heavy_size": max(1, budget - 2 * fixed)}
    if name == "hashattention":
        out["hat_weights"] = files["hat_weights"]
    if name == "double_sparsity":
        out["ds_channels"] = files["ds_channels"]
    return out


def calibration_files(folder: str, hq: int, hkv: int, d: int, layers: int = 1) -> dict:
    """Random (untrained) HashAttention weights and Double Sparsity channels for ``layers``
    layers: speed only."""
    files = {}
    try:
        from maskgraph.ops.zoo import hashattention as ha

        path = f"{folder}/hat.safetensors"
        ha.save_hash_weights(path, ha.random_hash_weights(layers, hq, hkv, d, 32, 64, seed=0))
        files["hat_weights"] = path
    except Exception as exc:  # noqa: BLE001 - a missing method only drops its rows
        print(f"hashattention weights unavailable: {exc}", flush=True)
    try:
        from maskgraph.ops.zoo import double_sparsity as ds

        gen = torch.Generator().manual_seed(0)
        path = f"{folder}/ds.safetensors"
        channels = [
            torch.stack([torch.randperm(d, generator=gen) for _ in range(hkv)]) for _ in range(layers)
        ]
        ds.save_channels(path, torch.stack(channels))
        files["ds_channels"] = path
    except Exception as exc:  # noqa: BLE001
        print(f"double_sparsity channels unavailable: {exc}", flush=True)
    return files


def ceilings(prep: dict, b: int, hq: int, hkv: int, hsel: int, nb: int, fixed: int, n: int, d: int, elt: int):
    """Lower bounds in ms: (bytes moved / HBM bandwidth, FLOPs / tensor-core peak).

    Bytes: every estimator cache read once, the ``nb`` block scores per query head written and
    read back by top-k, the ``fixed`` sink and window keys and values read in place once per KV
    head, the other ``n − fixed`` gathered once per selection head. FLOPs: q·k and p·v over the
    ``n`` keys, plus a multiply-add per cache element per query head of its KV group (scoring).
    """
    tensors = [t for p in prep.values() for t in p.values() if torch.is_tensor(t)]
    cache = sum(t.numel() * t.element_size() for t in tensors)
    cache_elems = sum(t.numel() for t in tensors)
    kv_rows = b * hkv * fixed + b * hsel * (n - fixed)
    moved = cache + 2 * b * hq * nb * 4 + 2 * kv_rows * d * elt
    flops = 4 * b * hq * n * d + 2 * cache_elems * (hq // hkv)
    return moved / HBM_BYTES_PER_S * 1e3, flops / BF16_FLOPS * 1e3


def score_blocks(graph: mg.Graph, num_keys: int) -> int:
    """Block scores per query head that top-k ranks: K/page_size for Quest, K, or 0."""
    ops = {node.op: name for name, node in graph.nodes.items()}
    if "topk_pages" in ops:
        page = graph.node_params(ops["topk_pages"])["page_size"]
        return -(-num_keys // page)
    return num_keys if any(op in ops for op in ("topk",)) else 0


def profile_step(fn, device: torch.device, title: str, top: int) -> None:
    """Print the ``top`` kernels of 10 calls of ``fn`` by device time."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    with profile(activities=acts) as prof:
        for _ in range(10):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"### profile: {title} (10 calls)")
    print(prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=60), flush=True)


def dense_case(q, k, v, device, args) -> dict:
    def sdpa():
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    ms, how = graph_ms(sdpa, device, args.warmup, args.reps)
    b, hq, _, d = q.shape
    kk = k.shape[2]
    moved = 2 * k.numel() * k.element_size()
    return dict(
        graph="dense SDPA",
        gqa="-",
        B=b,
        K=kk,
        density=1.0,
        n=kk,
        ms=ms,
        speedup=1.0,
        timing=how,
        mib=peak_mib(sdpa, device),
        bytes_ms=moved / HBM_BYTES_PER_S * 1e3,
        flops_ms=4 * b * hq * kk * d / BF16_FLOPS * 1e3,
    )


def sparse_case(name, gqa, density, q, k, v, dense_ms, files, device, args) -> dict:
    b, hq, _, d = q.shape
    kk = k.shape[2]
    budget = max(2, int(density * kk))
    row = dict(graph=name, gqa=gqa, B=b, K=kk, density=density)
    graph = mg.load_graph(name, overrides=graph_params(name, budget, files))
    attn = mg.compile(graph, backend=args.backend, mode="sparse", gqa=gqa, kernel=args.kernel, topk=args.topk)
    state = mg.State()
    prep = attn._prepare(k, v, state, 0)  # fills the estimator caches (k-means, signatures, pages)
    runner = attn._sparse
    scaling = d**-0.5

    am = torch.zeros(b, 1, 1, kk, device=q.device, dtype=torch.float32) if args.mask else None

    def step():
        return runner(q, k, v, am, scaling, prep, None, 0)

    ms, how = graph_ms(step, device, args.warmup, args.reps)
    if runner.uses_kernel(q):  # the same graph through the torch path: ratio and agreement
        plain = mg.compile(graph, backend=args.backend, mode="sparse", gqa=gqa, kernel="torch")._sparse

        def plain_step():
            return plain(q, k, v, am, scaling, prep, None, 0)

        row["torch_ms"], _ = graph_ms(plain_step, device, args.warmup, args.reps)
        row["vs_torch"] = row["torch_ms"] / ms
        a, b_ = step().double(), plain_step().double()
        row["err"] = ((a - b_).norm() / b_.norm()).item()
    if args.profile:
        profile_step(step, device, f"{name} {gqa} B={b} K={kk} density={density}", args.profile)
    try:  # the whole call: prepare (caches already up to date) + runner, no CUDA graph
        row["call_ms"] = median_ms(lambda: attn(q, k, v, state=state), device, 2, max(3, args.reps // 4))
    except Exception as exc:  # noqa: BLE001 - keep the runner's time
        row["error"] = "call: " + error_cell(exc)
    n = runner.budget(kk)
    hsel = k.shape[1] if gqa == "shared" else hq
    nb = score_blocks(graph, kk)
    params = graph_params(name, budget, files)
    fixed = min(n, params["sink_size"] + params["window_size"])
    bytes_ms, flops_ms = ceilings(prep, b, hq, k.shape[1], hsel, nb, fixed, n, d, k.element_size())
    row.update(
        n=n,
        ms=ms,
        speedup=dense_ms / ms,
        timing=how,
        mib=peak_mib(step, device),
        bytes_ms=bytes_ms,
        flops_ms=flops_ms,
        x_bytes=ms / bytes_ms,
    )
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny shapes on the CPU (smoke run)")
    ap.add_argument("--graphs", nargs="*", default=GRAPHS)
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    ap.add_argument("--kv-lens", nargs="*", type=int, default=[8192, 32768, 131072, 524288])
    ap.add_argument("--densities", nargs="*", type=float, default=[0.02, 0.05, 0.10])
    ap.add_argument("--gqa", nargs="*", default=["shared", "per_head"], choices=["shared", "per_head"])
    ap.add_argument(
        "--backend",
        default=None,
        choices=["eager", "inductor"],
        help="default: inductor on a GPU (what docs/performance.md reports: the list building fused "
        "into a few kernels; it compiles once per case), eager on the CPU (eager on a GPU runs the "
        "list building as dozens of small torch kernels)",
    )
    ap.add_argument(
        "--kernel",
        default="auto",
        choices=["auto", "triton", "torch"],
        help="sparse attention path (auto: the fused Triton kernel on CUDA); with the kernel, the "
        "torch path is timed too (torch_ms, vs_torch) and their outputs compared (err)",
    )
    ap.add_argument(
        "--topk",
        default="auto",
        choices=["auto", "torch", "triton"],
        help="top-k on the kernel path (auto: the Triton selection of maskgraph.lowering.topk)",
    )
    add_set_argument(ap, "maskgraph.lowering.topk.SMALL_MAX=8192 maskgraph.sparse.fused.BLOCK_N=32")
    ap.add_argument(
        "--mask",
        action="store_true",
        help="pass the additive (B, 1, 1, K) float32 attention mask (every key allowed) that the "
        "transformers injection passes to the sparse runner in decode",
    )
    ap.add_argument(
        "--profile", type=int, default=0, metavar="N", help="print the N costliest kernels per case"
    )
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=40)
    args = ap.parse_args(argv)
    apply_settings(args.set)
    # inductor's symbolic-shape code recursed past Python's default limit on the H100 (run 3)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))

    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if args.backend is None:
        args.backend = "inductor" if device.type == "cuda" else "eager"
    hq, hkv, d, dtype = 32, 8, 128, torch.bfloat16
    if args.quick:
        hq, hkv, d = 4, 2, 16
        args.batches, args.kv_lens, args.densities = [2], [300], [0.1]
        args.warmup, args.reps = 1, 2
    shipped = mg.shipped_graphs()
    graphs = [g for g in args.graphs if g in shipped]
    print(
        f"device: {device_name(device)}; torch {torch.__version__}; graphs: {', '.join(graphs)}", flush=True
    )
    rows: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        files = calibration_files(folder, hq, hkv, d)
        for b in args.batches:
            for kk in args.kv_lens:
                try:
                    gen = torch.Generator(device=device).manual_seed(kk + b)
                    q = torch.randn(b, hq, 1, d, device=device, dtype=dtype, generator=gen)
                    k = torch.randn(b, hkv, kk, d, device=device, dtype=dtype, generator=gen)
                    v = torch.randn(b, hkv, kk, d, device=device, dtype=dtype, generator=gen)
                    dense = dense_case(q, k, v, device, args)
                except Exception as exc:  # noqa: BLE001 - e.g. out of memory at the largest K
                    rows.append(dict(graph="dense SDPA", B=b, K=kk, error=error_cell(exc)))
                    print(rows[-1], flush=True)
                    _free(device)
                    continue
                rows.append(dense)
                print(_line(dense), flush=True)
                for name in graphs:
                    for density in args.densities:
                        for gqa in args.gqa:
                            if out_of_time():
                                continue
                            try:
                                row = sparse_case(
                                    name, gqa, density, q, k, v, dense["ms"], files, device, args
                                )
                            except Exception as exc:  # noqa: BLE001 - one case must not kill the table
                                row = dict(
                                    graph=name, gqa=gqa, B=b, K=kk, density=density, error=error_cell(exc)
                                )
                                print_failure(f"{name} {gqa} K={kk} density {density}", limit=3)
                                _free(device)
                            rows.append(row)
                            print(_line(row), flush=True)
                del q, k, v
                _free(device)
    payload = dict(
        benchmark="sparse",
        device=device_name(device),
        date=datetime.date.today().isoformat(),
        torch=torch.__version__,
        shape=dict(Hq=hq, Hkv=hkv, D=d, Q=1, dtype=str(dtype)),
        backend=args.backend,
        ceilings=dict(hbm_bytes_per_s=HBM_BYTES_PER_S, bf16_flops=BF16_FLOPS),
        seconds=time.perf_counter() - started,
        rows=rows,
    )
    path = write_json("sparse.json", payload)
    print(
        f"\n## sparse mode per call (Q=1) — {payload['device']}, {payload['date']}, torch {torch.__version__}, "
        f"backend {args.backend}; speedup = dense SDPA ms / sparse ms; x_bytes = ms / bytes ceiling"
    )
    print_table(rows, COLUMNS)
    print(f"wrote {path} in {payload['seconds']:.0f} s")
    return rows


def _line(row: dict) -> str:
    keys = ("graph", "gqa", "B", "K", "density", "n", "ms", "speedup", "timing", "error")
    return "  ".join(
        f"{k}={row[k]:.4g}" if isinstance(row.get(k), float) else f"{k}={row.get(k)}"
        for k in keys
        if k in row
    )


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
