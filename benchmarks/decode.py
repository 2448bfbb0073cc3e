"""Per-token decode latency of a Llama-3-8B-shaped model (random weights) after a dense prefill.

    python benchmarks/decode.py                    # GPU: 8 layers, contexts 32K and 128K
    python benchmarks/decode.py --quick            # CPU: a tiny model, checks the script runs

The context is prefilled once densely (SDPA); then each variant decodes N tokens through the
injected graph (protocol dense_prefill), and the cache is cropped back before the next variant.
Rows: plain SDPA, each graph compiled (simulate; and sparse where the graph supports it), and
one graph on the eager path. Median ms per token and the ratio to plain SDPA, from one run.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    TimeLimit,
    device_name,
    flash_sdpa,
    out_of_time,
    print_failure,  # noqa: E402
    report,
    stop_on_sigterm,
    sync,
)

import maskgraph as mg  # noqa: E402

GRAPHS = ["dense", "streaming_llm", "oracle_topk", "quest", "pqcache", "socket", "magicpig", "vattention"]


def llama3_8b_shaped(layers: int, quick: bool, device: torch.device, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    if quick:
        cfg = LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_hidden_layers=2,
            vocab_size=256,
            max_position_embeddings=4096,
        )
    else:
        cfg = LlamaConfig(
            hidden_size=4096,
            intermediate_size=14336,
            num_attention_heads=32,
            num_key_value_heads=8,
            num_hidden_layers=layers,
            vocab_size=128256,
            max_position_embeddings=262144,
            rope_theta=500000.0,
        )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    return model.to(dtype).eval(), cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--contexts", nargs="*", type=int, default=[32768, 131072])
    ap.add_argument("--tokens", type=int, default=24, help="decode steps per variant (first 4 are warm-up)")
    ap.add_argument("--graphs", nargs="*", default=GRAPHS)
    ap.add_argument(
        "--sparse",
        nargs="*",
        default=["streaming_llm", "oracle_topk", "quest"],
        help="graphs also run with mode=sparse",
    )
    ap.add_argument("--eager", default="streaming_llm", help="graph also run on the eager path")
    ap.add_argument(
        "--profile", action="store_true", help="print the top kernels of 3 decode steps per variant"
    )
    args = ap.parse_args()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))  # inductor on sparse graphs (run 3)

    warnings.filterwarnings("ignore", category=FutureWarning)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.quick:
        args.contexts, args.tokens = [256], 6
    model, cfg = llama3_8b_shaped(args.layers, args.quick, device, dtype)
    shipped = mg.shipped_graphs()
    variants = [("sdpa", None, None, None)]
    for g in args.graphs:
        if g in shipped:
            variants.append((f"{g}", g, "simulate", "inductor"))
            if g in args.sparse:
                variants.append((f"{g} [sparse]", g, "sparse", "inductor"))
    if args.eager in shipped:
        variants.append((f"{args.eager} [eager]", args.eager, "simulate", "eager"))

    rows = []
    pin = flash_sdpa()  # the dense baseline (and dense layers) use flash SDPA
    pin.__enter__()
    print(f"device: {device_name(device)}; torch {torch.__version__}", flush=True)
    stop_on_sigterm()
    cut = False
    try:
        for ctx in args.contexts:
            from transformers import DynamicCache

            ids = torch.randint(0, cfg.vocab_size, (1, ctx), device=device)
            cache = DynamicCache(config=cfg)
            with torch.no_grad():
                out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            sync(device)
            next_id = out.logits[:, -1:].argmax(-1)
            base = None
            for label, graph, mode, backend in variants:
                if out_of_time():
                    raise TimeLimit()
                row = dict(variant=label, context=ctx)
                handle = None
                try:
                    if graph is not None:
                        handle = mg.inject(model, graph, mode=mode, backend=backend, protocol="sparse")
                    times = []
                    tok = next_id
                    with torch.no_grad():
                        for step in range(args.tokens):
                            pos = torch.tensor([[ctx + step]], device=device)
                            if device.type == "cuda":
                                a, b = (
                                    torch.cuda.Event(enable_timing=True),
                                    torch.cuda.Event(enable_timing=True),
                                )
                                a.record()
                            else:
                                import time

                                t0 = time.perf_counter()
                            o = model(
                                input_ids=tok,
                                past_key_values=cache,
                                use_cache=True,
                                position_ids=pos,
                                cache_position=pos[0],
                            )
                            tok = o.logits[:, -1:].argmax(-1)
                            if device.type == "cuda":
                                b.record()
                                b.synchronize()
                                times.append(a.elapsed_time(b))
                            else:
                                times.append((time.perf_counter() - t0) * 1e3)
                    if args.profile:
                        from torch.profiler import ProfilerActivity, profile

                        acts = [ProfilerActivity.CPU] + (
                            [ProfilerActivity.CUDA] if device.type == "cuda" else []
                        )
                        with profile(activities=acts, record_shapes=True) as prof, torch.no_grad():
                            for step in range(3):
                                pos = torch.tensor([[ctx + args.tokens + step]], device=device)
                                model(
                                    input_ids=tok,
                                    past_key_values=cache,
                                    use_cache=True,
                                    position_ids=pos,
                                    cache_position=pos[0],
                                )
                            sync(device)
                        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
                        print(f"\n### profile {label} context {ctx} (3 steps)")
                        print(
                            prof.key_averages(group_by_input_shape=True).table(
                                sort_by=key,
                                row_limit=12,
                                max_name_column_width=40,
                                max_shapes_column_width=70,
                            )
                        )
                    ms = sorted(times[4:])[len(times[4:]) // 2]
                    row["ms_per_token"] = ms
                    if base is None:
                        base = ms
                    row["x_sdpa"] = ms / base
                except Exception as exc:
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
                    print_failure(str(label), limit=3)
                finally:
                    if handle is not None:
                        handle.remove()
                    extra = cache.get_seq_length() - ctx
                    if extra > 0:
                        cache.crop(-extra)
                rows.append(row)
                print(row, flush=True)
    except TimeLimit:
        cut = True
        print("time limit reached: the table below is partial", flush=True)
    title = f"decode per token, {args.layers} layers (Llama-3-8B shape)"
    cols = ["variant", "context", "ms_per_token", "x_sdpa", "error"]
    report("decode", rows, cols, title, cut, device=device_name(device), layers=args.layers)


if __name__ == "__main__":
    main()
