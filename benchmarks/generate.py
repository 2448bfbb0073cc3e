"""What users see: ``model.generate`` inside ``mg.inject``, against the same model on plain SDPA.

    python benchmarks/generate.py                 # GPU: 8 layers of Llama-3-8B's shape, 32K and 128K
    python benchmarks/generate.py --quick         # CPU: a tiny model, checks the script runs

For every variant — plain SDPA, each shipped graph in simulate mode and (where the graph has
one) sparse mode, each on transformers' default DynamicCache and on its static cache
(``cache_implementation="static"``, which transformers compiles itself on a GPU) — one greedy
``model.generate`` call after a prompt of each context length, exactly as the README shows it.
Plain SDPA, the dense prefills and
dense layers run SDPA's flash kernel (its default cuDNN kernel replans at every new key count).
An untimed call per context warms up first. A logits processor records a device event after every step, so one call gives the time to
first token (prefill) and the median milliseconds of each later token. With ``--protocol sparse``
the prompt goes through the graph too; the ``prefill`` column says how it ran (``flex``: one
FlexAttention call per layer for graphs that select by position; ``chunked``: chunks of queries
over gathered keys); a ``flex`` variant first runs one untimed call, so that compiling
FlexAttention for the prompt's shape stays out of its time to first token. Ratios are to plain
SDPA on the same cache, from the same run. The graphs run at their shipped parameters with the
method's budget set to ``--density`` of the context where the graph has such a parameter.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    TimeLimit,
    device_name,
    error_cell,
    flash_sdpa,
    llama3_8b_shaped,  # noqa: E402
    out_of_time,
    print_failure,  # noqa: E402
    report,
    stop_on_sigterm,
    sync,
)
from sparse import calibration_files  # noqa: E402

import maskgraph as mg  # noqa: E402
from maskgraph.errors import NotSupportedError  # noqa: E402

GRAPHS = [
    "dense",
    "streaming_llm",
    "oracle_topk",
    "quest",
    "pqcache",
    "hashattention",
    "double_sparsity",
    "socket",
    "random_sampling",
    "magicpig",
    "vattention",
]

#: The parameter that sets a graph's budget, as a share of the context (``--density``): the
#: first of these the graph has (the sink and window of the others stay as shipped).
BUDGET_PARAMS = ("heavy_size", "sampling_rate", "window_size")


@dataclass
class StepClock:
    """A logits processor that records a device event (or a host time) after every step."""

    device: torch.device
    marks: list = field(default_factory=list)

    def start(self) -> None:
        self.marks = [self._mark()]

    def _mark(self):
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.marks.append(self._mark())
        return scores

    def intervals_ms(self) -> list[float]:
        """Milliseconds from the call's start to the first token, then between tokens."""
        if self.device.type == "cuda":
            self.marks[-1].synchronize()
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        return [(b - a) * 1e3 for a, b in zip(self.marks, self.marks[1:])]


def overrides_for(graph: str, density: float, files: dict) -> dict:
    """The graph's budget parameter set to ``density`` (a share of the keys), if it has one, and
    random calibration files (speed only) where the graph needs them."""
    g = mg.load_graph(graph)
    out = next(({name: density} for name in BUDGET_PARAMS if name in g.params), {})
    out.update({name: path for name, path in files.items() if name in g.params})
    return out


def variants(
    graphs: list[str], modes: list[str], caches: list[str], files: dict
) -> list[tuple[str, str | None, str, str]]:
    """(label, graph, mode, cache) for plain SDPA and every graph that compiles in each mode."""
    out = [(f"sdpa [{c}]", None, "", c) for c in caches]
    for g in graphs:
        modes_here = [m for m in modes if m == "simulate"]
        if "sparse" in modes:
            try:
                mg.compile(g, mode="sparse", overrides=overrides_for(g, 0.1, files))
                modes_here.append("sparse")
            except NotSupportedError:
                pass
        for mode in modes_here:
            for c in caches:
                out.append((f"{g} {mode} [{c}]", g, mode, c))
    return out


def prefill_path(handle, mode: str, cache: str, protocol: str) -> str:
    """How the prompt's attention ran: ``sdpa`` (plain model or the dense_prefill protocol),
    ``simulate``, or in sparse mode the path the graph's prefill takes (``flex``: one
    FlexAttention call per layer; ``chunked``: chunks of queries over gathered keys, as on a
    static cache's buffer)."""
    if handle is None or protocol == "dense_prefill":
        return "sdpa"
    if mode == "simulate":
        return "simulate"
    if cache == "static":
        return "chunked (static buffer)"
    return next(a for a in handle.layers.values() if a is not None).prefill.path


def generate_once(model, ids, new_tokens: int, cache: str, clock: StepClock) -> None:
    kwargs = dict(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, logits_processor=[clock]
    )
    if cache == "static":
        kwargs["cache_implementation"] = "static"
    clock.start()
    model.generate(ids, **kwargs)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tiny model on the CPU")
    ap.add_argument("--layers", type=int, default=8, help="decoder layers of the Llama-3-8B-shaped model")
    ap.add_argument("--contexts", nargs="*", type=int, default=[32768, 131072], help="prompt lengths")
    ap.add_argument(
        "--tokens", type=int, default=32, help="generated tokens per call (the first 4 are warm-up)"
    )
    ap.add_argument("--graphs", nargs="*", default=GRAPHS, help="shipped graphs to run")
    ap.add_argument("--density", type=float, default=0.1, help="budget as a share of the context")
    ap.add_argument("--caches", nargs="*", default=["dynamic", "static"], choices=["dynamic", "static"])
    ap.add_argument("--modes", nargs="*", default=["simulate", "sparse"], choices=["simulate", "sparse"])
    ap.add_argument(
        "--backend", default=None, help="maskgraph backend (default: inductor on GPU, eager on CPU)"
    )
    ap.add_argument("--protocol", default="dense_prefill", choices=["dense_prefill", "sparse"])
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    backend = args.backend or ("inductor" if device.type == "cuda" else "eager")
    if args.quick:
        args.contexts, args.tokens = [192], max(6, min(args.tokens, 8))
    model, cfg = llama3_8b_shaped(args.layers, args.quick, device, dtype)
    model.generation_config.pad_token_id = 0
    files = calibration_files(
        tempfile.mkdtemp(),
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.hidden_size // cfg.num_attention_heads,
        cfg.num_hidden_layers,
    )
    print(f"device: {device_name(device)}; torch {torch.__version__}; backend {backend}", flush=True)
    pin = flash_sdpa()  # plain SDPA, dense prefills and dense layers: flash (cuDNN replans per key count)
    pin.__enter__()
    stop_on_sigterm()
    rows, cut = [], False
    try:
        for ctx in args.contexts:
            ids = torch.randint(1, cfg.vocab_size, (1, ctx), device=device)
            base: dict[str, float] = {}
            generate_once(model, ids, 2, "dynamic", StepClock(device))  # warm-up, untimed
            for label, graph, mode, cache in variants(args.graphs, args.modes, args.caches, files):
                if out_of_time():
                    raise TimeLimit()
                row = dict(variant=label, context=ctx, prefill="sdpa")
                clock = StepClock(device)
                if cache == "static":
                    torch._dynamo.reset()  # each variant compiles afresh, not into the recompile limit
                try:
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)
                    if graph is None:
                        with torch.no_grad():
                            generate_once(model, ids, args.tokens, cache, clock)
                    else:
                        over = overrides_for(graph, args.density, files)
                        with mg.inject(
                            model, graph, mode=mode, backend=backend, protocol=args.protocol, overrides=over
                        ) as handle:
                            row["prefill"] = prefill_path(handle, mode, cache, args.protocol)
                            if row["prefill"] == "flex":  # compile FlexAttention for this shape, untimed
                                generate_once(model, ids, 2, cache, StepClock(device))
                                if device.type == "cuda":
                                    torch.cuda.reset_peak_memory_stats(device)
                            generate_once(model, ids, args.tokens, cache, clock)
                    gaps = clock.intervals_ms()
                    row["ttft_ms"] = gaps[0]
                    row["ms_per_token"] = statistics.median(gaps[5:] if len(gaps) > 6 else gaps[1:])
                    if device.type == "cuda":
                        row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                    if graph is None:
                        base[cache] = row["ms_per_token"]
                        base[cache + "_ttft"] = row["ttft_ms"]
                    if cache in base:
                        row["x_sdpa"] = row["ms_per_token"] / base[cache]
                        row["ttft_x"] = row["ttft_ms"] / base[cache + "_ttft"]
                except TimeLimit:
                    raise
                except Exception as exc:
                    row["error"] = error_cell(exc, 90)
                    print_failure(str(label), limit=4)
                sync(device)
                rows.append(row)
                print(row, flush=True)
    except TimeLimit:
        cut = True
        print("time limit reached: the table below is partial", flush=True)
    title = f"model.generate per token, {args.layers} layers (Llama-3-8B shape), density {args.density}"
    cols = [
        "variant",
        "context",
        "prefill",
        "ttft_ms",
        "ttft_x",
        "ms_per_token",
        "x_sdpa",
        "peak_gib",
        "error",
    ]
    report(
        "generate", rows, cols, title, cut, device=device_name(device), layers=args.layers, backend=backend
    )
    return rows


if __name__ == "__main__":
    main()
