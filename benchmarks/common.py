"""Shared benchmark helpers: timing with device events, peak memory, tables, JSON output."""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import re
import signal
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, warmup: int = 5, reps: int = 50) -> float:
    """Median milliseconds of ``fn()`` after ``warmup`` calls (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_extra_mib(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak memory allocated during one ``fn()`` beyond what was allocated before (MiB)."""
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    out = fn()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    del out
    return (peak - before) / 2**20


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} cores)"


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print rows as an aligned Markdown table."""

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [
        max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)
    ]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |")


def write_json(name: str, payload: dict[str, Any]) -> str | None:
    """Write ``payload`` to $OUT/name (or benchmarks/out/name when OUT is unset); return the path."""
    folder = os.environ.get("OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    return path


def report(
    name: str, rows: list[dict[str, Any]], columns: list[str], title: str, cut: bool, **extra: Any
) -> dict:
    """Write ``rows`` to $OUT/<name>.json (with the device, date, torch version and ``extra``),
    then print ``## title — device, date`` and the table (noting a run cut by its time limit)."""
    import datetime

    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    payload = dict(
        benchmark=name,
        device=extra.pop("device", device_name(device)),
        date=datetime.date.today().isoformat(),
        torch=torch.__version__,
        **extra,
        rows=rows,
    )
    write_json(f"{name}.json", payload)
    print(f"\n## {title} — {payload['device']}, {payload['date']}")
    if cut:
        print("(partial: cut by the time limit)")
    print_table(rows, columns)
    return payload


def flash_sdpa():
    """Context pinning SDPA to flash (then memory-efficient) kernels: the cuDNN backend rebuilds
    its plan for every new key length, which would make a decode baseline unfairly slow."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


_START = time.monotonic()


def out_of_time() -> bool:
    """True once ``$MG_BENCH_BUDGET`` seconds have passed since import (never when unset).

    Scripts check it between cases and stop cleanly, so the table of what ran still prints
    (a signal arriving inside torch.compile would be swallowed by the compiler)."""
    budget = os.environ.get("MG_BENCH_BUDGET")
    return bool(budget) and time.monotonic() - _START > float(budget)


class TimeLimit(Exception):
    """Raised in the main thread when the process receives SIGTERM (e.g. from ``timeout``)."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM into :class:`TimeLimit`, so a script cut short still prints its table."""

    def handler(signum, frame):
        raise TimeLimit()

    signal.signal(signal.SIGTERM, handler)


def median_ms(fn, device: torch.device, warmup: int, reps: int) -> float:
    """Median milliseconds per ``fn()`` (CUDA events on GPU, perf_counter on CPU)."""
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    torch.cuda.synchronize(device)
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


#: Calls recorded back to back in one CUDA graph by :func:`graph_ms`. One call per replay
#: also times the graph's own launch (≈ 5–10 µs on an H100/H200, run 30), which a decode step
#: recorded whole pays once for all its layers; from run 31 on, every per-call time is a replay
#: of this many calls divided by it.
CALLS_PER_GRAPH = 10


def graph_ms(
    fn, device: torch.device, warmup: int, reps: int, calls: int = CALLS_PER_GRAPH
) -> tuple[float, str]:
    """Median ms per ``fn()`` replayed from a CUDA graph holding ``calls`` calls back to back
    (launch overhead removed, the gaps between kernels kept); on CPU, or if capture fails, of
    plain calls. Returns (ms, "cuda-graph" | "calls")."""
    if device.type == "cuda":
        try:
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                for _ in range(3):
                    fn()
            torch.cuda.current_stream(device).wait_stream(stream)
            cuda_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(cuda_graph):
                for _ in range(calls):
                    fn()
            return median_ms(cuda_graph.replay, device, warmup, reps) / calls, "cuda-graph"
        except Exception as exc:  # capture is an optimisation: time plain calls instead
            print(f"  (CUDA graph capture failed: {type(exc).__name__}: {exc}"[:160] + ")", flush=True)
            torch.cuda.synchronize(device)
    return median_ms(fn, device, warmup, reps), "calls"


def parse_setting(text: str) -> tuple[str, str, Any]:
    """'package.module.NAME=VALUE' -> (module, NAME, value); VALUE a Python literal."""
    target, sep, value = text.partition("=")
    module, _, name = target.rpartition(".")
    if not sep or not module or not name:
        raise argparse.ArgumentTypeError(
            f"expected MODULE.NAME=VALUE such as maskgraph.lowering.topk.BINS=128, got {text!r}"
        )
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: {value!r} is not a Python literal (a number, True, 'text')"
        ) from exc
    return module, name, parsed


def add_set_argument(ap: argparse.ArgumentParser, example: str) -> None:
    """``--set MODULE.NAME=VALUE …``: module constants to override for the run (:func:`apply_settings`),
    to compare against the shipped settings; ``example`` shows one or two in the help."""
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        type=parse_setting,
        metavar="MODULE.NAME=VALUE",
        help=f"override module constants for the run, to compare against the shipped settings, e.g. {example}",
    )


def apply_settings(settings: list[tuple[str, str, Any]]) -> None:
    """Set each (module, NAME, value): the module must exist and already define NAME."""
    for module, name, value in settings:
        mod = importlib.import_module(module)
        if not hasattr(mod, name):
            raise SystemExit(f"--set: {module} has no {name} to override")
        print(f"setting {module}.{name} = {value!r} (was {getattr(mod, name)!r})", flush=True)
        setattr(mod, name, value)


def print_failure(case: str, limit: int = 3) -> None:
    """Say on stderr that ``case`` failed with the exception being handled: one line, or the
    traceback when ``MG_BENCH_TRACEBACKS`` is set (``maskgraph --debug bench ...`` sets it).
    The failed row still reaches the table, with its error."""
    import sys
    import traceback

    if os.environ.get("MG_BENCH_TRACEBACKS"):
        traceback.print_exc(limit=limit)
        return
    print(f"{case}: {error_cell(sys.exc_info()[1], 200)}", file=sys.stderr, flush=True)


#: A line of an error message that starts with an exception's name (``AssertionError(...``).
ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception)\b")


def error_cell(exc: BaseException, width: int = 100) -> str:
    """A failed case's table cell: the exception's type and the line of its message that says
    what went wrong, cut to ``width`` characters. That is the first line, unless it only
    introduces what follows (ends with a colon, as inductor's errors from its compile workers
    do): then the first line that names an error and says something, else the last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if text.endswith(":"):
        telling = [line for line in lines if ERROR_LINE.match(line) and not line.endswith(":")]
        text = telling[0] if telling else lines[-1]
    return f"{type(exc).__name__}: {text[:width]}"


def llama3_8b_shaped(
    layers: int, quick: bool, device: torch.device, dtype: torch.dtype, vocab_size: int | None = None
):
    """A Llama model of Llama-3-8B's layer shape with ``layers`` layers and random weights (``quick``:
    a tiny one for the CPU), in ``dtype`` on ``device``, with transformers' SDPA attention.
    ``vocab_size`` replaces the vocabulary's size (to match a tokenizer); None keeps Llama-3's
    (tiny: 256)."""
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
    if vocab_size is not None:
        cfg.vocab_size = vocab_size
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    return model.to(dtype).eval(), cfg
