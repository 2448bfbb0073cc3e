"""Sweeps on Ray: fractional GPUs on one card, and one actor per GPU on a multi-GPU host.

    python benchmarks/sweeps.py fractions          # one GPU: examples/sweep_gpu.yaml, 4 x 0.25 GPU vs 1 at a time
    python benchmarks/sweeps.py gpus               # every GPU of the host: 1 GPU vs N, a lost actor, the rerun
    python benchmarks/sweeps.py fractions --quick  # CPU: a tiny model, Ray "GPUs" that are CPU slots
    python benchmarks/sweeps.py gpus --quick

Both need Ray (pip install 'maskgraph[ray]'); each run starts its own local Ray and stops it.

``fractions`` runs the sweep of examples/sweep_gpu.yaml (SmolLM2, eight trials, ``device: cuda``)
twice, each into a fresh store: on Ray with ``resources.num_gpus`` = ``--fraction`` (0.25: four
actors share the card), then on Ray with one actor (``--workers 1``). Ray is given one GPU. A
background thread samples the GPU's utilisation (nvidia-smi) during each run. The table: trials,
wall seconds, trials per minute, mean utilisation and the wall-time ratio to the one-at-a-time
run; both stores must hold the same rows (the fields of ``COMPARED``). ``--model random`` sweeps
the random model of ``gpus`` instead of the file's models, on a host where SmolLM2 is not installed.

``gpus`` saves a random Llama-3-8B-shaped model (``--layers`` layers; the vocabulary of
SmolLM2's tokenizer when that model is installed, else a byte tokenizer) as a HuggingFace folder
and sweeps it: every shipped graph that needs no calibration file (dense at its own parameters,
the others at ``--densities``), the micro metrics on (measured density, relative output error,
attention-mass recall), ``--samples`` samples of ``--task`` at ``--length`` tokens, one sample per
trial. Phases (``--phases``; each writes WORK/<phase>.json, so they may run in separate commands
on a warm machine with the same ``--work``):

- ``one``: Ray given one GPU, one actor;
- ``all``: Ray given every GPU, one actor per GPU (``resources.num_gpus: 1``);
- ``kill``: as ``all``; once a trial has finished, one actor's process is killed (SIGKILL, its
  PID from Ray's actor table), the sweep goes on (its trial is recorded as failed; the sweep
  starts a replacement actor, which Ray places on the freed GPU); then a rerun with
  ``--retry-errors`` semantics, which must run only the missing (cell, sample) pairs: the
  rows of every finished trial are left byte for byte, and the union equals the ``all`` store.

The table: GPUs, trials, wall seconds (the sweep call: actors, model loads and trials; not
Ray's start), trials per minute, scaling efficiency (speed-up over one GPU divided by the GPU
count; ideal 1.0) and mean GPU utilisation. Then the checks, each PASS or FAIL; the exit
status is 1 when one fails. The NCCL and NVLink settings of the environment are left as they
are (the sweep moves no tensor between GPUs).

``--quick`` runs on the CPU with a tiny model, perplexity windows of 64 tokens and Ray told of
``--slots`` GPUs that do not exist: Ray schedules actors on these slots as on GPUs (fractions
included) and the trials run on the CPU; utilisation is the CPU's, labelled as such.
JSON goes to $OUT/sweeps_<command>.json (default benchmarks/out/).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import report  # noqa: E402

RAY_INSTALL = "pip install 'maskgraph[ray]'"
#: Row fields compared between two stores of the same sweep: ``status`` exactly, the others
#: within ``|a - b| <= atol + rtol * |b|`` (both None counts as equal).
COMPARED_EXACT = ("status",)
COMPARED = ("density", "rel_err", "recall", "score", "agreement", "nll")
RTOL, ATOL = 1e-3, 1e-5
SAMPLE_SECONDS = 0.5
QUICK_TEXT = """\
sweep: {name}
models: [{model}]
graphs:
{graphs}
tasks: [ppl]
lengths: [64]
samples: {samples}
shard: {shard}
template: plain
metrics: true
device: cpu
resources: {{num_cpus: {cpus}, num_gpus: {gpus}}}
"""


# ----- Ray ----------------------------------------------------------------------------------------
def require_ray():
    """The ``ray`` module, or exit with one line saying how to install it."""
    try:
        import ray
    except ImportError:
        print(f"benchmarks/sweeps.py needs Ray, which is not installed: {RAY_INSTALL}", file=sys.stderr)
        raise SystemExit(1) from None
    return ray


@contextmanager
def local_ray(num_cpus: int | None, num_gpus: int | None, quick: bool):
    """A local Ray for one sweep run, whose workers import this checkout's maskgraph.
    ``num_gpus``: the GPUs Ray may hand out (None: every GPU it finds; on the CPU, slots that
    stand in for GPUs)."""
    ray = require_ray()
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=(100 * 2**20) if quick else None,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def alive_trial_workers(ray) -> list[int]:
    """PIDs of the live sweep actors (class TrialWorker), from Ray's actor table (the public
    state API needs the dashboard, which these runs do not start)."""
    from ray._private import state

    table = state.actors(actor_state_name="ALIVE")
    return sorted(
        int(a["Pid"])
        for a in table.values()
        if "TrialWorker" in str(a.get("ActorClassName")) and a.get("Pid")
    )


# ----- utilisation --------------------------------------------------------------------------------
def gpu_sample() -> list[float] | None:
    """Per-GPU utilisation (%) now, from NVML (nvidia-ml-py) or else nvidia-smi; None without
    either."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [
                float(pynvml.nvmlDeviceGetUtilizationRates(pynvml.nvmlDeviceGetHandleByIndex(i)).gpu)
                for i in range(pynvml.nvmlDeviceGetCount())
            ]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML here: ask nvidia-smi
        pass
    lines = nvidia_smi("--query-gpu=utilization.gpu")
    try:
        return [float(x) for x in lines] if lines else None
    except ValueError:
        return None


def nvidia_smi(query: str) -> list[str] | None:
    """The CSV lines (no header, no units) nvidia-smi prints for ``query``; None without it."""
    try:
        out = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.splitlines() if out.returncode == 0 else None


def gpu_of(pid: int) -> int | None:
    """The index of the GPU process ``pid`` holds memory on (nvidia-smi), or None."""
    apps, gpus = nvidia_smi("--query-compute-apps=pid,gpu_uuid"), nvidia_smi("--query-gpu=index,uuid")
    if not apps or not gpus:
        return None
    index = {uuid.strip(): int(i) for i, uuid in (line.split(",") for line in gpus)}
    held = {int(p): uuid.strip() for p, uuid in (line.split(",") for line in apps)}
    return index.get(held.get(pid, ""))


class Sampler:
    """Samples utilisation every ``SAMPLE_SECONDS`` in a background thread while in a ``with``:
    the GPUs' (nvidia-smi, averaged over ``gpus``: indices, None for all) or, for ``kind``
    "CPU", the CPU's (psutil)."""

    def __init__(self, kind: str, gpus: list[int] | None = None) -> None:
        self.kind = kind
        self.gpus = gpus
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        if self.kind == "CPU":
            import psutil

            psutil.cpu_percent(interval=None)  # starts the interval the first sample closes
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            value = self._one()
            if value is not None:
                self.values.append(value)

    def _one(self) -> float | None:
        if self.kind == "CPU":
            import psutil

            return psutil.cpu_percent(interval=None)
        per_gpu = gpu_sample()
        if not per_gpu:
            return None
        chosen = [per_gpu[i] for i in self.gpus if i < len(per_gpu)] if self.gpus else per_gpu
        return sum(chosen) / len(chosen) if chosen else None

    @property
    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None


# ----- one timed sweep ----------------------------------------------------------------------------
@dataclass
class Timed:
    """One sweep run: what ran, how long the sweep call took, the mean utilisation."""

    label: str
    trials: int
    done: int
    failed: int
    wall_s: float
    utilisation: float | None
    util_kind: str
    ran: int | None = None  # trials this call ran, when not every trial (a rerun)

    @property
    def per_minute(self) -> float:
        ran = self.done if self.ran is None else self.ran
        return 60 * ran / self.wall_s if self.wall_s > 0 else 0.0


def timed_sweep(
    label: str,
    spec,
    text: str,
    out: Path,
    workers: int | None,
    util: Sampler,
    retry: bool = False,
    ran: int | None = None,
) -> Timed:
    """Run ``spec`` into ``out`` on the Ray already started (``workers`` actors; None: as many
    as the resources allow), timing the call and sampling utilisation; ``ran``: how many trials
    had work left (a rerun), for trials per minute."""
    from maskgraph.eval.sweeprun import BackendOptions, run_sweep

    options = BackendOptions(backend="ray", workers=workers)
    start = time.perf_counter()
    with util:
        summary = run_sweep(spec, out, text, options, retry_errors=retry, progress=False)
    wall = time.perf_counter() - start
    return Timed(label, summary.trials, summary.done, len(summary.failed), wall, util.mean, util.kind, ran)


def default_work(command: str, quick: bool) -> Path:
    """Where a command keeps its stores (and model) unless ``--work`` says otherwise."""
    return REPO / "benchmarks" / "out" / f"sweeps_{command}{'_quick' if quick else ''}"


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return folder


# ----- comparing stores ---------------------------------------------------------------------------
@dataclass
class RowCheck:
    """Two stores' rows, keyed by (cell, sample): how many, which are missing, which differ."""

    rows: int
    other_rows: int
    missing: int
    differing: int
    max_abs: dict[str, float] = field(default_factory=dict)

    @property
    def equal(self) -> bool:
        return self.rows > 0 and self.missing == 0 and self.differing == 0 and self.rows == self.other_rows


def store_rows(root: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """(cell, sample) -> row, from the store's ``rows`` table."""
    with closing(sqlite3.connect(root / "results.sqlite")) as db:
        db.row_factory = sqlite3.Row
        return {(r["cell"], r["index"]): dict(r) for r in db.execute("SELECT * FROM rows")}


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= ATOL + RTOL * abs(b)


def compare_stores(root: Path, reference: Path) -> RowCheck:
    """The rows of ``root`` against those of ``reference`` (fields ``COMPARED_EXACT`` and
    ``COMPARED``; see their comment)."""
    mine, ref = store_rows(root), store_rows(reference)
    differing, max_abs = 0, {f: 0.0 for f in COMPARED}
    for key, want in ref.items():
        got = mine.get(key)
        if got is None:
            continue
        same = all(got[f] == want[f] for f in COMPARED_EXACT)
        for f in COMPARED:
            if got[f] is not None and want[f] is not None:
                max_abs[f] = max(max_abs[f], abs(got[f] - want[f]))
            same = same and close(got[f], want[f])
        differing += not same
    missing = sum(1 for key in ref if key not in mine)
    return RowCheck(len(mine), len(ref), missing, differing, max_abs)


# ----- fractions ----------------------------------------------------------------------------------
def fractions_spec(args) -> tuple[Any, str]:
    """The sweep of ``fractions`` (spec, text) with ``resources.num_gpus`` = ``--fraction``."""
    from maskgraph.eval.sweepfile import Resources, parse_sweep

    if args.quick:
        graphs = "  - graph: streaming_llm\n    densities: [0.25, 0.5]\n"
        graphs += "  - graph: oracle_topk\n    densities: [0.25, 0.5]"
        text = QUICK_TEXT.format(
            name="gpu-fractions-quick", model="tiny-llama", graphs=graphs, samples=16, shard=2,
            cpus=0.5, gpus=args.fraction,
        )  # fmt: skip
        spec = parse_sweep(text, file="<quick>")
    else:
        path = Path(args.sweep_file)
        text = path.read_text(encoding="utf-8")
        if args.model is not None:
            text = with_model(text, fractions_model(args))
        spec = parse_sweep(text, file=str(path), base=path.parent)
    res = Resources(num_cpus=spec.resources.num_cpus, num_gpus=args.fraction)
    return dataclasses.replace(spec, resources=res), text


def fractions_model(args) -> str:
    """``--model``: ``random`` saves the random Llama-3-8B-shaped model of ``gpus`` (``--layers``
    layers) under the work folder and names that folder; a folder is named by its absolute path
    (the sweep file reads relative paths from its own folder); anything else is taken as given."""
    if args.model != "random":
        folder = Path(args.model).expanduser()
        return str(folder.resolve()) if folder.is_dir() else args.model
    work = Path(args.work) if args.work else default_work("fractions", args.quick)
    folder = work / f"model_{args.layers}_layers"
    print(f"random model in {folder}: tokenizer {save_model(folder, args.layers, args.quick)}", flush=True)
    return str(folder.resolve())


def with_model(text: str, model: str) -> str:
    """The sweep YAML ``text`` with its ``models`` list replaced by ``[model]``."""
    import yaml

    data = yaml.safe_load(text)
    data["models"] = [model]
    return yaml.safe_dump(data, sort_keys=False)


def run_fractions(args) -> int:
    import torch

    spec, text = fractions_spec(args)
    gpu = torch.cuda.is_available() and not args.quick
    card = torch.cuda.get_device_name(0) if gpu else None
    kind = "GPU" if gpu else "CPU"
    cpus = 2 if args.quick else None
    at_once = min(int((cpus or os.cpu_count() or 1) // spec.resources.num_cpus), int(1 // args.fraction))
    work = Path(args.work) if args.work else default_work("fractions", args.quick)
    print(f"sweep {spec.name}: {len(spec.trials())} trials; " + _where(card, args.quick, 1), flush=True)
    runs = []
    for label, workers, folder in (
        (f"{at_once} at a time x {args.fraction:g} GPU", None, "fractions"),
        ("one at a time (--workers 1)", 1, "serial"),
    ):
        with local_ray(cpus, 1, args.quick):
            runs.append(timed_sweep(label, spec, text, fresh(work / folder), workers, Sampler(kind, [0])))
        print(f"{label}: {runs[-1].wall_s:.1f} s", flush=True)
    same = compare_stores(work / "fractions", work / "serial")
    base = runs[1].wall_s
    rows = [
        {
            "variant": r.label, "trials": r.done, "failed": r.failed, "wall_s": round(r.wall_s, 2),
            "trials_per_min": round(r.per_minute, 2),
            f"mean_{r.util_kind.lower()}_util_pct": None if r.utilisation is None else round(r.utilisation, 1),
            "wall_vs_one_at_a_time": round(r.wall_s / base, 3),
        }
        for r in runs
    ]  # fmt: skip
    util_col = f"mean_{kind.lower()}_util_pct"
    checks = {"every trial done": all(r.failed == 0 and r.done == r.trials for r in runs)}
    checks["same rows in both stores"] = same.equal
    title = f"Ray sweep, {at_once} trials x {args.fraction:g} GPU vs one at a time"
    cols = ["variant", "trials", "failed", "wall_s", "trials_per_min", util_col, "wall_vs_one_at_a_time"]
    report(
        "sweeps_fractions", rows, cols, title, False, device=_device(card, args.quick, 1),
        sweep=spec.name, fraction=args.fraction, checks=checks, rows_compared=dataclasses.asdict(same),
        utilisation=f"{kind} utilisation, sampled every {SAMPLE_SECONDS:g} s",
    )  # fmt: skip
    return _print_checks(checks, same)


# ----- gpus ---------------------------------------------------------------------------------------
def uncalibrated_graphs() -> list[str]:
    """Shipped graphs none of whose operators reads a calibration file."""
    from maskgraph.calibrate.defaults import calibrated_op
    from maskgraph.loader import load_graph, shipped_graphs

    return [
        name
        for name in shipped_graphs()
        if not any(calibrated_op(n.op) for n in load_graph(name).nodes.values())
    ]


def offline_tokenizer():
    """SmolLM2's tokenizer when that model is installed (converted once, as maskgraph loads
    it), else None (the saved model then reads bytes)."""
    from maskgraph.hf import models

    folder = models.cache_dir("smollm2")
    try:
        from transformers import AutoTokenizer

        if (folder / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(folder)
        if models.MODELS["smollm2"].locate():
            return models.load_model("smollm2")[1]
    except Exception as exc:  # noqa: BLE001 - a byte tokenizer is the documented fallback
        print(f"SmolLM2's tokenizer did not load ({type(exc).__name__}: {exc}); using bytes", flush=True)
    return None


def save_model(folder: Path, layers: int, quick: bool) -> str:
    """Save the random Llama-3-8B-shaped model (and its tokenizer) into ``folder`` once;
    returns what the tokenizer is."""
    import torch
    from common import llama3_8b_shaped

    marker = folder / "tokenizer.txt"
    if (folder / "config.json").is_file() and marker.is_file():
        return marker.read_text()
    tokenizer = None if quick else offline_tokenizer()
    vocab = len(tokenizer) if tokenizer is not None else 256
    device = torch.device("cuda" if torch.cuda.is_available() and not quick else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, _ = llama3_8b_shaped(layers, quick, device, dtype, vocab_size=vocab)
    fresh(folder)
    model.save_pretrained(folder)
    what = "bytes (vocabulary 256)"
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
        what = f"SmolLM2's (vocabulary {vocab})"
    marker.write_text(what)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return what


def gpus_spec(args, model: Path) -> tuple[Any, str]:
    from maskgraph.eval.sweepfile import parse_sweep
    from maskgraph.loader import load_graph

    items = []
    for name in args.graphs:
        params = load_graph(name).params
        items.append(f"  - graph: {name}")
        if params:
            items.append(f"    densities: [{', '.join(map(str, args.densities))}]")
    if args.quick:
        text = QUICK_TEXT.format(
            name="gpus-quick", model=model, graphs="\n".join(items), samples=args.samples, shard=1,
            cpus=1, gpus=1,
        )  # fmt: skip
    else:
        text = "\n".join(
            [
                "sweep: gpus", f"models: [{model}]", "graphs:", *items, f"tasks: [{args.task}]",
                f"lengths: [{args.length}]", f"samples: {args.samples}", "shard: 1", "template: plain",
                "metrics: true", "device: cuda", "resources: {num_cpus: 1, num_gpus: 1}", "",
            ]
        )  # fmt: skip
    return parse_sweep(text, file="<gpus>"), text


def gpu_count(args) -> int:
    import torch

    if args.quick:
        return args.slots
    return torch.cuda.device_count()


@dataclass
class Killed:
    """The actor process killed mid-sweep, and when (seconds into the sweep)."""

    pid: int | None = None
    gpu: int | None = None
    after_s: float | None = None
    trials_done_before: int = 0


class ActorKiller(threading.Thread):
    """Kills one sweep actor's process (SIGKILL) once ``after`` trials are recorded done."""

    def __init__(self, ray, store: Path, after: int = 1) -> None:
        super().__init__(daemon=True)
        self.ray, self.store, self.after = ray, store, after
        self.killed = Killed()
        self.stop = threading.Event()
        self.start_time = time.perf_counter()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            done = trials_done(self.store)
            pids = alive_trial_workers(self.ray) if done >= self.after else []
            if pids:
                pid = pids[-1]
                gpu = gpu_of(pid)
                os.kill(pid, signal.SIGKILL)
                self.killed = Killed(pid, gpu, round(time.perf_counter() - self.start_time, 2), done)
                return


def trials_done(store: Path) -> int:
    try:
        with closing(sqlite3.connect(store / "results.sqlite", timeout=1)) as db:
            return db.execute("SELECT count(*) FROM trials WHERE status = 'done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def rows_files(store: Path) -> dict[str, bytes]:
    """Trial id -> its rows.jsonl as bytes."""
    return {p.parent.name: p.read_bytes() for p in (store / "trials").glob("*/rows.jsonl")}


def pair_counts(store: Path) -> Counter:
    """(cell, sample) -> lines of every trial's rows.jsonl that hold it (whole lines only)."""
    pairs: Counter = Counter()
    for data in rows_files(store).values():
        for line in data.decode().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            pairs[(row["cell"], row["index"])] += 1
    return pairs


@dataclass
class Rerun:
    """What the rerun after the kill ran, against what was missing."""

    pairs_total: int
    pairs_before: int
    pairs_written: int
    trials_rerun: int
    finished_trials_untouched: bool
    no_pair_twice: bool

    @property
    def only_missing(self) -> bool:
        return (
            self.pairs_written == self.pairs_total - self.pairs_before
            and self.finished_trials_untouched
            and self.no_pair_twice
        )


def run_kill(args, spec, text, work: Path, n: int, kind: str) -> dict[str, Any]:
    """The ``kill`` phase: the sweep with one actor killed once a trial is done, then the rerun."""
    from maskgraph.eval.trials import pairs_left

    store = fresh(work / "kill")
    cpus = 2 if args.quick else None
    with local_ray(cpus, n, args.quick) as ray:
        killer = ActorKiller(ray, store)
        killer.start()
        try:
            first = timed_sweep(f"{n} actors, one killed", spec, text, store, n, Sampler(kind))
        finally:
            killer.stop.set()
            killer.join()
    print(f"killed actor process {killer.killed.pid}{on_gpu(killer.killed.gpu)} at {killer.killed.after_s} s; "
          f"{first.done} of {first.trials} trials done, {first.failed} failed", flush=True)  # fmt: skip
    before_files = rows_files(store)
    before = pair_counts(store)
    with closing(sqlite3.connect(store / "results.sqlite")) as db:
        finished = {tid for (tid,) in db.execute("SELECT id FROM trials WHERE status = 'done'")}
    rerun_trials = sum(1 for t in spec.trials() if pairs_left(store, t, True) > 0)
    with local_ray(cpus, n, args.quick):
        second = timed_sweep(
            "rerun (retry errors)", spec, text, store, n, Sampler(kind), retry=True, ran=rerun_trials
        )
    after = pair_counts(store)
    after_files = rows_files(store)
    total = sum(t.pairs for t in spec.trials())
    rerun = Rerun(
        pairs_total=total,
        pairs_before=len(before),
        pairs_written=sum(after.values()) - sum(before.values()),
        trials_rerun=rerun_trials,
        finished_trials_untouched=all(after_files.get(t) == before_files[t] for t in finished),
        no_pair_twice=max(after.values(), default=0) == 1,
    )
    return {
        "runs": [dataclasses.asdict(first) | {"per_minute": first.per_minute},
                 dataclasses.asdict(second) | {"per_minute": second.per_minute}],
        "killed": dataclasses.asdict(killer.killed),
        "rerun": dataclasses.asdict(rerun) | {"only_missing": rerun.only_missing},
    }  # fmt: skip


def run_phase(phase: str, args, spec, text, work: Path, n: int, kind: str) -> dict[str, Any]:
    if phase == "kill":
        return run_kill(args, spec, text, work, n, kind)
    gpus = 1 if phase == "one" else n
    cpus = 2 if args.quick else None
    label = "1 GPU, 1 actor" if gpus == 1 else f"{gpus} GPUs, one actor each"
    with local_ray(cpus, gpus, args.quick):
        timed = timed_sweep(label, spec, text, fresh(work / phase), gpus, Sampler(kind))
    return {"runs": [dataclasses.asdict(timed) | {"per_minute": timed.per_minute, "gpus": gpus}]}


def run_gpus(args) -> int:
    import torch

    n = gpu_count(args)
    if n < 1:
        raise SystemExit("gpus: no GPU found (torch.cuda.device_count() is 0); use --quick on the CPU")
    args.samples = args.samples or (6 if args.quick else max(16, 2 * n))  # trials queued at the kill
    gpu = torch.cuda.is_available() and not args.quick
    card = torch.cuda.get_device_name(0) if gpu else None
    kind = "GPU" if gpu else "CPU"
    if args.quick:
        args.graphs = args.graphs or ["dense", "streaming_llm", "oracle_topk", "random_sampling"]
    args.graphs = args.graphs or uncalibrated_graphs()
    work = Path(args.work) if args.work else default_work("gpus", args.quick)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = save_model(work / f"model_{args.layers}_layers", args.layers, args.quick)
    spec, text = gpus_spec(args, work / f"model_{args.layers}_layers")
    trials = spec.trials()
    what = "perplexity windows of 64 tokens" if args.quick else f"{args.task} at {args.length} tokens"
    print(
        f"{len(trials)} trials x {len(trials[0].variants)} variants ({what}; graphs: {', '.join(args.graphs)}); "
        f"tokenizer: {tokenizer}; {_where(card, args.quick, n)}",
        flush=True,
    )
    for phase in args.phases:
        result = run_phase(phase, args, spec, text, work, n, kind)
        result |= {"sweep_sha": sweep_sha(text), "gpu_count": n}
        (work / f"{phase}.json").write_text(json.dumps(result, indent=1))
        print(
            f"{phase}: " + "; ".join(f"{r['label']} {r['wall_s']:.1f} s" for r in result["runs"]), flush=True
        )
    return gpus_report(args, work, n, card, kind, tokenizer, spec, sweep_sha(text))


def sweep_sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_phases(work: Path, sha: str, n: int) -> dict[str, dict[str, Any]]:
    """The phases' results in ``work`` (this command's or an earlier one's) of the same sweep
    on as many GPUs; others are named and left out."""
    phases = {}
    for p in PHASES:
        path = work / f"{p}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        if data.get("sweep_sha") == sha and data.get("gpu_count") == n:
            phases[p] = data
        else:
            print(f"leaving out {path}: another sweep or GPU count", flush=True)
    return phases


def gpus_report(args, work: Path, n: int, card: str | None, kind: str, tokenizer: str, spec, sha: str) -> int:
    """The table and checks from the phases' JSON files in ``work`` (this run's or earlier)."""
    phases = load_phases(work, sha, n)
    one = phases.get("one", {}).get("runs", [{}])[0]
    rows = []
    for phase, result in phases.items():
        for r in result["runs"]:
            gpus = r.get("gpus", n)
            row = {
                "run": r["label"], "gpus": gpus, "trials": r["done"] if r.get("ran") is None else r["ran"],
                "failed": r["failed"],
                "wall_s": round(r["wall_s"], 2), "trials_per_min": round(r["per_minute"], 2),
                f"mean_{kind.lower()}_util_pct": None if r["utilisation"] is None else round(r["utilisation"], 1),
            }  # fmt: skip
            if phase == "all" and one:
                row["efficiency"] = round(one["wall_s"] / r["wall_s"] / gpus, 3)
            rows.append(row)
    checks: dict[str, bool] = {}
    same = None
    if "one" in phases and "all" in phases:
        same = compare_stores(work / "all", work / "one")
        checks[f"1-GPU and {n}-GPU rows equal"] = same.equal
    if "kill" in phases:
        k = phases["kill"]
        checks["a trial was lost to the kill"] = k["runs"][0]["failed"] >= 1
        checks["the other trials finished"] = (
            k["runs"][0]["done"] + k["runs"][0]["failed"] == k["runs"][0]["trials"]
        )
        checks["the rerun ran only the missing pairs"] = k["rerun"]["only_missing"]
        checks["every trial done after the rerun"] = k["runs"][1]["failed"] == 0
        if (work / "all").is_dir():
            checks[f"killed + rerun rows equal the clean {n}-GPU rows"] = compare_stores(
                work / "kill", work / "all"
            ).equal
    util_col = f"mean_{kind.lower()}_util_pct"
    cols = ["run", "gpus", "trials", "failed", "wall_s", "trials_per_min", "efficiency", util_col]
    title = f"Ray sweep on 1 and {n} {'CPU slots' if args.quick else 'GPUs'}, one actor per GPU"
    report(
        "sweeps_gpus", rows, cols, title, False, device=_device(card, args.quick, n), gpu_count=n,
        sweep=spec.to_json(), tokenizer=tokenizer, checks=checks, phases=phases,
        rows_compared=None if same is None else dataclasses.asdict(same),
    )  # fmt: skip
    if "kill" in phases:
        k = phases["kill"]
        print(f"kill: actor process {k['killed']['pid']}{on_gpu(k['killed'].get('gpu'))} killed {k['killed']['after_s']} s into the sweep, "
              f"after {k['killed']['trials_done_before']} trial(s) were done")  # fmt: skip
        r = k["rerun"]
        print(f"rerun: {r['trials_rerun']} trial(s) with missing pairs; {r['pairs_before']} of {r['pairs_total']} "
              f"pairs there before, {r['pairs_written']} written by the rerun")  # fmt: skip
    return _print_checks(checks, same)


# ----- output -------------------------------------------------------------------------------------
def on_gpu(index: int | None) -> str:
    return "" if index is None else f" (GPU {index})"


def _where(card: str | None, quick: bool, n: int) -> str:
    if quick:
        return f"CPU stand-in: Ray told of {n} GPU(s) that are CPU slots, trials on the CPU"
    return f"{n} x {card}"


def _device(card: str | None, quick: bool, n: int) -> str:
    import torch
    from common import device_name

    if quick:
        return f"{device_name(torch.device('cpu'))}, {n} CPU slot(s) standing in for GPUs"
    return f"{n} x {card}"


def _print_checks(checks: dict[str, bool], same: RowCheck | None) -> int:
    if same is not None:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in same.max_abs.items())
        print(
            f"rows compared by (cell, sample): {same.rows} vs {same.other_rows}, {same.missing} missing, "
            f"{same.differing} differing; {', '.join(COMPARED_EXACT)} exact, {', '.join(COMPARED)} within "
            f"{ATOL:g} + {RTOL:g}·|x|; largest differences: {diffs}"
        )
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


PHASES = ("one", "all", "kill")


FRACTIONS_EPILOG = """\
examples:
  python benchmarks/sweeps.py fractions                  # one GPU: 4 x 0.25 GPU, then 1 at a time
  python benchmarks/sweeps.py fractions --fraction 0.5   # 2 at a time
  python benchmarks/sweeps.py fractions --quick          # CPU stand-in (about a minute and a half)
The stores go to --work (fractions/ and serial/, made afresh); the table and JSON to $OUT.
"""

GPUS_EPILOG = """\
examples:
  python benchmarks/sweeps.py gpus                        # every phase in one command
  python benchmarks/sweeps.py gpus --phases one           # one phase per command, same --work:
  python benchmarks/sweeps.py gpus --phases all kill      #   the table takes the phases run so far
  python benchmarks/sweeps.py gpus --samples 8 --length 8192   # a smaller sweep
  python benchmarks/sweeps.py gpus --quick                # CPU stand-in (about a minute and a half)
A phase's JSON in --work is used only with the same sweep and GPU count. The model is saved
once in --work/model_<layers>_layers/ (about 4 GiB at 8 layers in bf16).
"""


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="benchmarks/sweeps.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="{fractions,gpus}")
    raw = argparse.RawDescriptionHelpFormatter
    f = sub.add_parser(
        "fractions",
        help="one GPU: trials of a fraction of the GPU, several at once, vs one at a time",
        description="Run a sweep file on Ray twice, into fresh stores: trials of --fraction GPU, as many "
        "at once as fit on one GPU; then one at a time. Time both, sample the GPU's utilisation, "
        "compare the stores' rows.",
        epilog=FRACTIONS_EPILOG,
        formatter_class=raw,
    )
    f.add_argument(
        "--quick",
        action="store_true",
        help="CPU: tiny-llama, perplexity windows; Ray's one GPU is a CPU slot",
    )
    f.add_argument(
        "--sweep-file",
        default=str(REPO / "examples" / "sweep_gpu.yaml"),
        help="the sweep (default examples/sweep_gpu.yaml; ignored with --quick)",
    )
    f.add_argument(
        "--fraction", type=float, default=0.25, help="resources.num_gpus of a trial, in (0, 1] (default 0.25)"
    )
    f.add_argument(
        "--model",
        default=None,
        help="the sweep's model instead of the file's: a shipped name, a saved HF folder, or 'random' "
        "(the random Llama-3-8B-shaped model of 'gpus', --layers layers, for a host without SmolLM2; ignored with --quick)",
    )
    f.add_argument("--layers", type=int, default=8, help="decoder layers of --model random (default 8)")
    f.add_argument(
        "--work",
        default=None,
        help="folder of the two stores and --model random's model (default benchmarks/out/sweeps_fractions[_quick])",
    )
    g = sub.add_parser(
        "gpus",
        help="a multi-GPU host: 1 GPU vs all, one actor per GPU; a killed actor; the rerun",
        description="Sweep a random Llama-3-8B-shaped model on Ray: phase 'one' on one GPU, 'all' on "
        "every GPU (one actor each), 'kill' as 'all' with one actor's process killed mid-sweep, then "
        "a rerun. Prints wall time, trials per minute, scaling efficiency and PASS/FAIL checks "
        "(rows equal; the rerun ran only the missing pairs); exit status 1 if one fails.",
        epilog=GPUS_EPILOG,
        formatter_class=raw,
    )
    g.add_argument(
        "--quick", action="store_true", help="CPU: a tiny model, perplexity windows; Ray's GPUs are CPU slots"
    )
    g.add_argument(
        "--slots", type=int, default=2, help="with --quick: CPU slots standing in for GPUs (default 2)"
    )
    g.add_argument(
        "--phases", nargs="+", default=list(PHASES), choices=PHASES, help="which runs (default: all three)"
    )
    g.add_argument("--layers", type=int, default=8, help="decoder layers of the random model (default 8)")
    g.add_argument("--length", type=int, default=32768, help="context length in tokens (default 32768)")
    g.add_argument(
        "--task", default="niah_single_number", help="the task of every trial (default niah_single_number)"
    )
    g.add_argument(
        "--samples",
        type=int,
        default=None,
        help="samples, one trial each (default: 16 or twice the GPUs, whichever is more; --quick 6)",
    )
    g.add_argument(
        "--densities",
        nargs="+",
        type=float,
        default=[0.05, 0.1, 0.2],
        help="target densities (default 0.05 0.1 0.2)",
    )
    g.add_argument(
        "--graphs",
        nargs="+",
        default=None,
        help="shipped graphs (default: every one that reads no calibration file; --quick: four of them)",
    )
    g.add_argument(
        "--work",
        default=None,
        help="the model and the stores, kept between phases (default benchmarks/out/sweeps_gpus)",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    require_ray()
    warnings.filterwarnings("ignore")
    if args.command == "fractions":
        if not 0 < args.fraction <= 1:
            raise SystemExit(f"--fraction must be in (0, 1], got {args.fraction}")
        return run_fractions(args)
    return run_gpus(args)


if __name__ == "__main__":
    sys.exit(main())
