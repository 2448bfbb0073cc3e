"""``maskgraph sweep``: run a sweep file's trials on a backend into one store (docs/sweeps.md).

Backends:

- ``local`` (default; Ray is never imported): one worker in this process, or ``workers`` worker
  processes (``gpus`` pins one worker per GPU through ``CUDA_VISIBLE_DEVICES``);
- ``ray``: one Ray actor per worker, each holding ``resources.num_cpus`` CPUs and
  ``resources.num_gpus`` GPUs (fractions allowed) and keeping its model loaded across trials;
  ``address`` joins an existing cluster.

Resuming: trials are found by id (:meth:`~maskgraph.eval.sweepfile.Trial.id`) and every trial
folder skips its finished (cell, sample) pairs, so a rerun runs only what is missing. A trial
that failed is not run again unless ``retry_errors`` (which also reruns samples whose row is an
error). SIGINT and SIGTERM stop the sweep; samples in flight are lost, nothing else.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MaskgraphError
from .store import SweepStore
from .sweepfile import SweepSpec, Trial
from .trials import ModelCache, TrialResult, pairs_left, run_trial

BACKENDS = ("local", "ray")
RAY_INSTALL = "pip install 'maskgraph[ray]' (or: pip install 'ray[tune]')"


@dataclass(frozen=True)
class BackendOptions:
    """Where trials run (see the module docstring)."""

    backend: str = "local"
    workers: int | None = None
    gpus: tuple[str, ...] = ()
    address: str | None = None

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise MaskgraphError(f"--backend {self.backend!r}: valid: {', '.join(BACKENDS)}")
        if self.workers is not None and self.workers < 1:
            raise MaskgraphError(f"--workers must be >= 1, got {self.workers}")
        if self.backend == "local" and self.address:
            raise MaskgraphError("--address joins a Ray cluster: it needs --backend ray")
        if self.backend == "ray" and self.gpus:
            raise MaskgraphError(
                "--gpus pins local workers; with --backend ray give resources.num_gpus in the sweep file"
            )
        if self.gpus and self.workers not in (None, len(self.gpus)):
            raise MaskgraphError(
                f"--gpus {','.join(self.gpus)} runs one worker per GPU ({len(self.gpus)}); "
                f"--workers {self.workers} disagrees (leave it out)"
            )


@dataclass
class SweepSummary:
    """What a sweep run did: trial counts, the store, the metrics written."""

    out: Path
    trials: int
    done: int
    failed: dict[str, str] = field(default_factory=dict)
    skipped_failed: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


# ----- the run ------------------------------------------------------------------------------------
def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    text: str,
    options: BackendOptions = BackendOptions(),
    *,
    retry_errors: bool = False,
    progress: bool = True,
) -> SweepSummary:
    """Run (or resume) every trial of ``spec`` into ``out`` (``text``: the sweep file, kept in
    the store) and rebuild the store's tables."""
    options.check()
    store = SweepStore.open(out, spec, text)
    trials = spec.trials()
    failed_before = store.failed()
    todo, skipped = [], 0
    for t in trials:
        if t.id in failed_before and not retry_errors:
            skipped += 1
        elif pairs_left(store.root, t, retry_errors) > 0:
            todo.append(t)
    by_id = {t.id: t for t in trials}

    view = Progress(len(todo), enabled=progress)

    def finished(result: TrialResult) -> None:
        store.record(by_id[result.id], result)
        view.finished(result)

    try:
        with _terminate_as_interrupt(), view:
            if todo:
                BACKEND_RUNNERS[options.backend](
                    store.root, todo, options, spec, retry_errors, view, finished
                )
    finally:
        metrics = store.finalise(trials)
    failed = {tid: error for tid, error in store.failed().items() if tid in by_id}
    done = sum(1 for t in trials if t.id not in failed)
    return SweepSummary(store.root, len(trials), done, failed, skipped, metrics)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as SIGINT does (main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# ----- progress -----------------------------------------------------------------------------------
class Progress:
    """One live line: trials done / running / failed and the ETA (tqdm)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total = total
        self.enabled = enabled
        self.running = 0
        self.failed = 0
        self.bar = None

    def __enter__(self) -> Progress:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=self.total, disable=not self.enabled, unit="trial", desc="sweep", dynamic_ncols=True
        )
        self._show()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def started(self) -> None:
        self.running += 1
        self._show()

    def finished(self, result: TrialResult) -> None:
        self.running = max(0, self.running - 1)
        if result.status == "failed":
            self.failed += 1
            if self.bar is not None and self.enabled:
                self.bar.write(f"trial {result.id} failed: {result.error}")
        if self.bar is not None:
            self.bar.update(1)
        self._show()

    def _show(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"running {self.running}, failed {self.failed}")


Finished = Callable[[TrialResult], None]


# ----- local backend ------------------------------------------------------------------------------
def run_local(
    root: Path, todo: list[Trial], options: BackendOptions, spec, retry: bool, view, finished: Finished
) -> None:
    """One worker in this process, or worker processes (one per GPU with ``gpus``), each given one
    trial at a time; a worker that dies fails its trial and is replaced."""
    workers = len(options.gpus) if options.gpus else (options.workers or 1)
    if workers == 1 and not options.gpus:
        cache = ModelCache()
        for t in todo:
            view.started()
            finished(run_trial(root, t, cache, retry))
        return
    import multiprocessing as mp
    import queue as queues

    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    results = ctx.Queue()
    gpus: list[str | None] = list(options.gpus) or [None] * workers
    slots = [WorkerSlot(ctx, results, gpu) for gpu in gpus]
    waiting = list(todo)
    try:
        while waiting or any(s.trial for s in slots):
            for s in slots:
                if s.trial is None and waiting:
                    s.give(waiting.pop(0), root, retry)
                    view.started()
            # every result that arrived before a worker is found dead counts as its trial's end
            for result in _drain(results, queues.Empty):
                accept(slots, result, finished)
            for s in slots:
                if s.trial is not None and not s.process.is_alive():
                    finished(_died(s.trial, s.process.exitcode))
                    s.restart()
    finally:
        for s in slots:
            s.terminate()
        for s in slots:
            s.join()


def _drain(results, empty: type[Exception]) -> list[TrialResult]:
    """The results in the queue: waits a moment for the first, then takes what is there."""
    out = []
    try:
        out.append(results.get(timeout=0.2))
        while True:
            out.append(results.get_nowait())
    except empty:
        return out


def accept(slots: list[WorkerSlot], result: TrialResult, finished: Finished) -> bool:
    """Free the slot that ran ``result``'s trial and record the result; False (and nothing
    recorded) for a stale result, whose trial was already failed when its worker died."""
    slot = next((s for s in slots if s.trial is not None and s.trial.id == result.id), None)
    if slot is None:
        return False
    slot.trial = None
    finished(result)
    return True


class WorkerSlot:
    """One worker process of the local backend, its task queue and the trial it runs."""

    def __init__(self, ctx, results, gpu: str | None) -> None:
        self.ctx = ctx
        self.results = results
        self.gpu = gpu
        self.trial: Trial | None = None
        self.restart()

    def restart(self) -> None:
        self.trial = None
        self.tasks = self.ctx.Queue()
        self.process = self.ctx.Process(
            target=_worker_main, args=(self.tasks, self.results, self.gpu), daemon=True
        )
        self.process.start()

    def give(self, trial: Trial, root: Path, retry: bool) -> None:
        if not self.process.is_alive():  # ended while idle
            self.restart()
        self.trial = trial
        self.tasks.put((str(root), trial, retry))

    def terminate(self) -> None:
        if self.process.is_alive():
            self.process.terminate()

    def join(self) -> None:
        self.process.join(timeout=10)
        if self.process.is_alive():  # stuck in native code
            self.process.kill()
            self.process.join()


def _died(trial: Trial, exitcode: int | None) -> TrialResult:
    """A trial whose worker process ended while running it."""
    how = (
        f"killed by signal {-exitcode}"
        if exitcode is not None and exitcode < 0
        else f"exit status {exitcode}"
    )
    line = f"WorkerDied: the worker process ended while running the trial ({how})"
    return TrialResult(trial.id, "failed", 0.0, line, line)


def worker_setup(gpu: str | None) -> None:
    """A worker process: ignores SIGINT (the sweep stops its workers), ends through Python's
    exit on SIGTERM (so its multiprocessing locks are released) and sees only ``gpu``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_terminate)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def _exit_on_terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _worker_main(tasks, results, gpu: str | None) -> None:
    worker_setup(gpu)
    results.cancel_join_thread()  # a worker told to stop does not wait for the sweep to read it
    cache = ModelCache()
    while True:
        root, trial, retry = tasks.get()
        results.put(run_trial(root, trial, cache, retry))


# ----- Ray backend --------------------------------------------------------------------------------
class TrialWorker:
    """A Ray actor's state: the model it keeps loaded across trials."""

    def __init__(self) -> None:
        self.cache = ModelCache()

    def run(self, root: str, trial: Trial, retry: bool) -> TrialResult:
        return run_trial(root, trial, self.cache, retry)


def import_ray():
    """The ``ray`` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise MaskgraphError(
            f"--backend ray needs Ray, which is not installed; install it with: {RAY_INSTALL}"
        ) from None
    return ray


def run_ray(
    root: Path,
    todo: list[Trial],
    options: BackendOptions,
    spec: SweepSpec,
    retry: bool,
    view,
    finished: Finished,
) -> None:
    """Ray actors, each with the sweep's per-trial resources; trials go to idle actors."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        init_ray(ray, options.address)
    res = spec.resources
    try:
        actor_cls = ray.remote(num_cpus=res.num_cpus, num_gpus=res.num_gpus)(TrialWorker)
        n = options.workers or _ray_capacity(ray.cluster_resources(), res.num_cpus, res.num_gpus)
        actors = [actor_cls.remote() for _ in range(max(1, min(n, len(todo))))]
        queue = list(todo)
        running: dict[Any, tuple[Any, Trial]] = {}
        idle = list(actors)
        try:
            while queue or running:
                while queue and idle:
                    actor, trial = idle.pop(), queue.pop(0)
                    running[actor.run.remote(str(root), trial, retry)] = (actor, trial)
                    view.started()
                ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
                for ref in ready:
                    actor, trial = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the actor died (out of memory, a crash)
                        result = _lost(trial, exc)
                        ray.kill(actor)
                        actors.remove(actor)
                        actor = actor_cls.remote()
                        actors.append(actor)
                    idle.append(actor)
                    finished(result)
        finally:
            for a in actors:
                ray.kill(a)
    finally:
        if started_here:
            ray.shutdown()


def _lost(trial: Trial, exc: Exception) -> TrialResult:
    """A trial whose worker died: failed, with Ray's account of it."""
    import traceback

    text = "".join(traceback.format_exception(exc))
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return TrialResult(trial.id, "failed", 0.0, f"{type(exc).__name__}: {first}", text)


def init_ray(
    ray, address: str | None, num_cpus: int | None = None, object_store_memory: int | None = None
) -> None:
    """Start a local Ray (workers import this maskgraph) or join the cluster at ``address``.
    ``num_cpus`` and ``object_store_memory`` (bytes) size a local start (None: Ray's defaults);
    a cluster keeps its own."""
    if address:
        ray.init(address=address, log_to_driver=False)
        return
    package_parent = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        runtime_env={"env_vars": {"PYTHONPATH": path}},
        log_to_driver=False,
        include_dashboard=False,
        num_cpus=num_cpus,
        object_store_memory=object_store_memory,
    )


def _ray_capacity(resources: dict[str, float], cpus: float, gpus: float) -> int:
    """How many actors of ``cpus`` CPUs and ``gpus`` GPUs the cluster holds at once."""
    n = int(resources.get("CPU", 1) // cpus) if cpus else 1 << 30
    if gpus:
        n = min(n, int(resources.get("GPU", 0) // gpus))
        if n == 0:
            raise MaskgraphError(
                f"resources.num_gpus is {gpus:g} but the Ray cluster has {resources.get('GPU', 0):g} GPUs"
            )
    return max(1, n)


BACKEND_RUNNERS = {"local": run_local, "ray": run_ray}
