"""Per-token decode with the whole step recorded as one CUDA graph (GraphedDecoder).

    python benchmarks/decode_graph.py                  # GPU: 8 layers, contexts 32K and 128K
    python benchmarks/decode_graph.py --quick          # CPU: a tiny model, eager steps only

Llama-3-8B-shaped model (random weights), prompt prefilled densely, greedy decoding on a
static cache. Each variant runs twice from the same prompt: eager steps (every step pays
Python and launch time) and recorded steps (one CUDA graph replay per token). Rows: plain SDPA
on the static cache (transformers' own path: a boolean mask, so not the flash kernel), flash
SDPA over the whole buffer without a mask (timing only: it attends the padding, so its tokens
are wrong; what a dense kernel taking the token count would cost), maskgraph's sparse mode for each graph at an
int budget of ``density · context`` keys, and the ``dense`` graph in sparse mode (every key
through the same fused kernel). Columns: ms per token, the ratio to SDPA recorded the same
way, the ratio of recorded to eager, and whether both runs produced the same tokens.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    TimeLimit,
    add_set_argument,
    apply_settings,
    device_name,
    error_cell,
    flash_sdpa,
    llama3_8b_shaped,  # noqa: E402
    out_of_time,
    print_failure,  # noqa: E402
    report,
    stop_on_sigterm,
)
from sparse import calibration_files, graph_params  # noqa: E402

import maskgraph as mg  # noqa: E402
from maskgraph.hf import GraphedDecoder  # noqa: E402

GRAPHS = ["streaming_llm", "quest", "hashattention", "double_sparsity", "pqcache"]
FLASH = "padded_sdpa_timing_only"


def flash_padded(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Timing only: flash SDPA over the whole static buffer, padding included (no mask), i.e.
    what a dense decode kernel that takes the token count as a tensor would cost. Its tokens
    are wrong (the padding is attended)."""
    import torch.nn.functional as F

    with flash_sdpa():
        out = F.scaled_dot_product_attention(
            query, key, value, scale=scaling, is_causal=query.shape[2] > 1, enable_gqa=True
        )
    return out.transpose(1, 2).contiguous(), None


def use_flash_padded(model, on: bool) -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    if on:
        AttentionInterface.register(FLASH, flash_padded)
        AttentionMaskInterface.register(FLASH, lambda *args, **kwargs: None)
    model.set_attn_implementation(FLASH if on else "sdpa")


def budget_overrides(name: str, budget: int, context: int, files: dict, shares: bool) -> dict:
    """:func:`graph_params` for ``budget`` keys; ``shares``: the top-k budget as a share of the
    context (a float: the static buffer then ranks its picks and keeps the share of its tokens)."""
    overrides = graph_params(name, budget, files)
    if shares and "heavy_size" in overrides:
        overrides["heavy_size"] = overrides["heavy_size"] / context
    return overrides


def run_variant(model, ids, record: bool, steps: int, warmup: int, device) -> tuple[float, list]:
    """(median ms per token after the warm-up, the tokens) of ``steps`` decode steps."""
    dec = GraphedDecoder(model, ids.shape[1] + warmup + steps + 2, record=record, warmup=warmup)
    dec.prefill(ids)
    tokens, times = [], []
    for i in range(warmup + steps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dec.advance(i)
            end.record()
            end.synchronize()
            ms = start.elapsed_time(end)
        else:
            import time

            t0 = time.perf_counter()
            dec.advance(i)
            ms = (time.perf_counter() - t0) * 1e3
        tokens.append(dec._token.clone())
        if i > warmup:  # the step after the warm-up records the graph
            times.append(ms)
    del dec
    return statistics.median(times), [int(t.flatten()[0]) for t in tokens]


def profile_steps(model, ids, device, title: str, steps: int = 2) -> None:
    """The kernels of ``steps`` eager decode steps after a warm-up, by device time."""
    from torch.profiler import ProfilerActivity, profile

    dec = GraphedDecoder(model, ids.shape[1] + steps + 4, record=False)
    dec.prefill(ids)
    dec.advance(0)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for i in range(steps):
            dec.advance(1 + i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"] if device.type == "cuda" else []
    launches = sum(e.count for e in events)
    print(f"\n### profile: {title}: {launches / steps:.0f} kernels per step", flush=True)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=70), flush=True)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CPU, tiny model, eager steps only")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--contexts", nargs="*", type=int, default=[32768, 131072])
    ap.add_argument("--densities", nargs="*", type=float, default=[0.02, 0.1])
    ap.add_argument("--graphs", nargs="*", default=GRAPHS)
    ap.add_argument("--steps", type=int, default=20, help="timed decode steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="eager steps before recording")
    ap.add_argument("--gqa", default="shared", choices=["shared", "per_head"])
    ap.add_argument(
        "--shares",
        action="store_true",
        help="top-k budgets as shares of the context (floats, as the shipped graphs give them) "
        "instead of token counts",
    )
    add_set_argument(ap, "maskgraph.sparse.fused.BLOCK_N=32")
    ap.add_argument(
        "--profile",
        nargs="*",
        default=[],
        metavar="VARIANT",
        help="also print the kernels of 2 eager steps of these variants (e.g. quest dense)",
    )
    args = ap.parse_args(argv)
    apply_settings(args.set)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    warnings.filterwarnings("ignore", category=FutureWarning)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.quick:
        args.contexts, args.steps = [200], 4
    model, cfg = llama3_8b_shaped(args.layers, args.quick, device, dtype)
    hq, hkv = cfg.num_attention_heads, cfg.num_key_value_heads
    args.layers = cfg.num_hidden_layers
    files = calibration_files(tempfile.mkdtemp(), hq, hkv, cfg.hidden_size // hq, args.layers)
    modes = [False] if device.type != "cuda" else [False, True]
    print(f"device: {device_name(device)}; torch {torch.__version__}", flush=True)
    stop_on_sigterm()
    rows, cut = [], False
    try:
        for ctx in args.contexts:
            ids = torch.randint(0, cfg.vocab_size, (1, ctx), device=device, generator=None)
            variants = [("sdpa", None, None), ("flash (timing only)", FLASH, None), ("dense", "dense", {})]
            for density in args.densities:
                budget = int(density * ctx)
                variants += [
                    (g, g, budget_overrides(g, budget, ctx, files, args.shares)) for g in args.graphs
                ]
            base = {}
            for label, graph, overrides in variants:
                if out_of_time():
                    raise TimeLimit()
                density = (
                    None
                    if graph in (None, FLASH, "dense")
                    else round(
                        sum(
                            v * ctx if isinstance(v, float) else v
                            for k, v in overrides.items()
                            if k.endswith("_size")
                        )
                        / ctx,
                        3,
                    )
                )
                row = dict(variant=label, context=ctx, density=density)
                handle = None
                try:
                    if graph == FLASH:
                        use_flash_padded(model, True)
                    elif graph is not None:
                        handle = mg.inject(
                            model, graph, mode="sparse", backend="inductor", overrides=overrides, gqa=args.gqa
                        )
                    tokens = {}
                    for record in modes:
                        ms, tokens[record] = run_variant(model, ids, record, args.steps, args.warmup, device)
                        row["graph_ms" if record else "eager_ms"] = ms
                    if label in args.profile:
                        profile_steps(model, ids, device, f"{label} context {ctx} density {density}")
                    if True in tokens:
                        row["same_tokens"] = tokens[True] == tokens[False]
                        row["x_eager"] = row["graph_ms"] / row["eager_ms"]
                    key = "graph_ms" if "graph_ms" in row else "eager_ms"
                    if graph is None:
                        base[key] = row[key]
                    row["x_sdpa"] = row[key] / base[key] if key in base else None
                    if handle is not None:
                        row["static_calls"] = handle.static_calls
                except Exception as exc:  # noqa: BLE001 - one failing variant keeps the table
                    row["error"] = error_cell(exc)
                    print_failure(str(label), limit=4)
                finally:
                    if handle is not None:
                        handle.remove()
                    if graph == FLASH:
                        use_flash_padded(model, False)
                    torch.cuda.empty_cache() if device.type == "cuda" else None
                rows.append(row)
                print(row, flush=True)
    except TimeLimit:
        cut = True
        print("time limit reached: the table below is partial", flush=True)
    cols = ["variant", "context", "density", "eager_ms", "graph_ms", "x_sdpa", "x_eager", "same_tokens"]
    title = (
        f"decode per token, whole step as one CUDA graph, {args.layers} layers (Llama-3-8B shape), "
        f"gqa={args.gqa}; x_sdpa = ms / SDPA ms (same timing)"
    )
    report(
        "decode_graph",
        rows,
        cols + ["static_calls", "error"],
        title,
        cut,
        device=device_name(device),
        layers=args.layers,
    )
    return rows


if __name__ == "__main__":
    main()
