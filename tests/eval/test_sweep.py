"""``maskgraph sweep`` on a tiny random model (CPU): the store, resuming, failed trials, the
report of a sweep folder, local worker processes and a real local Ray, interrupted sweeps.

Every sweep here runs perplexity windows of 64 byte-tokens of a small text file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from maskgraph.cli.main import main
from maskgraph.eval import trials as trials_module
from maskgraph.eval.sweepfile import parse_sweep
from maskgraph.eval.sweeprun import BackendOptions, run_sweep

ROOT = Path(__file__).resolve().parents[2]

SWEEP = """\
sweep: two-by-two
models: [tiny-llama]
graphs:
  - graph: streaming_llm
    densities: [0.25, 0.5]
  - graph: oracle_topk
    densities: [0.25, 0.5]
tasks: [ppl]
lengths: [64]
samples: {samples}
shard: {shard}
template: plain
text_file: book.txt
"""


def sweep_file(folder: Path, samples: int = 3, shard: int = 2, text: str = SWEEP) -> Path:
    (folder / "book.txt").write_text("In the beginning was a long sentence about nothing much at all. " * 80)
    path = folder / "sweep.yaml"
    path.write_text(text.format(samples=samples, shard=shard))
    return path


def raw_rows(out: Path) -> list[dict]:
    """Every line of every trial's rows.jsonl (not deduplicated)."""
    rows = []
    for p in sorted((out / "trials").glob("*/rows.jsonl")):
        rows += [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
    return rows


def table(out: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(out / "results.sqlite") as db:
        return list(db.execute(sql))


def comparable(out: Path) -> list[tuple]:
    """The store's rows without timings, sorted."""
    return table(
        out, 'SELECT model, cell, "index", status, score, nll, density FROM rows ORDER BY cell, "index"'
    )


def run_cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(argv)
    got = capsys.readouterr()
    assert "Traceback" not in got.err
    return rc, got.out, got.err


# ----- the local backend, the store, resuming, the report ----------------------------------------
def test_local_sweep_store_resume_and_report(tmp_path, capsys, monkeypatch):
    path = sweep_file(tmp_path)
    out = tmp_path / "out"
    rc, stdout, _ = run_cli(["sweep", str(path), "--out", str(out), "--no-progress"], capsys)
    assert rc == 0 and "2 of 2 trials done" in stdout
    # 2 graphs x 2 densities x 3 samples, in two shards (samples 0-1 and 2)
    pairs = Counter((r["cell"], r["index"]) for r in raw_rows(out))
    assert len(pairs) == 12 and set(pairs.values()) == {1}
    assert {r["label"] for r in raw_rows(out)} == {
        "streaming_llm@25%", "streaming_llm@50%", "oracle_topk@25%", "oracle_topk@50%",
    }  # fmt: skip
    assert table(out, "SELECT status, count(*) FROM trials GROUP BY status") == [("done", 2)]
    assert table(out, "SELECT count(*) FROM rows") == [(12,)]
    cells = json.loads((out / "metrics.json").read_text())["cells"]
    assert len(cells) == 4 and all(c["samples"] == 3 and c["model"] == "tiny-llama" for c in cells.values())
    assert (
        cells["tiny-llama:streaming_llm@25%/ppl/64"]["density"]
        < cells["tiny-llama:streaming_llm@50%/ppl/64"]["density"]
    )

    # a rerun finds everything done: no model load, no new row
    loads = []
    real = trials_module.load_model
    monkeypatch.setattr(trials_module, "load_model", lambda *a: loads.append(a) or real(*a))
    assert run_cli(["sweep", str(path), "--out", str(out), "--no-progress"], capsys)[0] == 0
    assert loads == [] and len(raw_rows(out)) == 12

    # the report reads the sweep folder as it reads a run
    md = tmp_path / "report.md"
    assert run_cli(["report", str(out), "--out", str(md)], capsys)[0] == 0
    text = md.read_text()
    assert "### Perplexity" in text and "| streaming_llm | 25% |" in text and "| oracle_topk | 50% |" in text
    assert (tmp_path / "accuracy_vs_density.png").stat().st_size > 1000


def test_trial_ids_are_stable_and_an_added_graph_runs_only_its_cells(tmp_path, capsys):
    path = sweep_file(tmp_path, samples=2, shard=2)
    spec = parse_sweep(path.read_text(), file=str(path), base=tmp_path)
    ids = [t.id for t in spec.trials()]
    assert ids == [t.id for t in parse_sweep(path.read_text(), base=tmp_path).trials()]
    out = tmp_path / "out"
    assert run_cli(["sweep", str(path), "--out", str(out), "--no-progress"], capsys)[0] == 0
    first = raw_rows(out)

    more = path.read_text().replace("graphs:\n", "graphs:\n  - dense\n")
    path.write_text(more)
    spec2 = parse_sweep(more, base=tmp_path)
    assert [t.id for t in spec2.trials()] == ids  # variants are not part of a trial's identity
    assert run_cli(["sweep", str(path), "--out", str(out), "--no-progress"], capsys)[0] == 0
    rows = raw_rows(out)
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert sorted(map(key, first)) == sorted(key(r) for r in rows if r["label"] != "dense@default")
    assert sorted(r["index"] for r in rows if r["label"] == "dense@default") == [0, 1]
    assert Counter((r["cell"], r["index"]) for r in rows).most_common(1)[0][1] == 1

    # another sample split is another set of trials
    assert {
        t.id for t in parse_sweep(more.replace("shard: 2", "shard: 1"), base=tmp_path).trials()
    }.isdisjoint(ids)


def test_a_grid_and_two_models_make_labelled_variants_and_model_sections(tmp_path, capsys):
    text = """\
models: [tiny-llama, tiny-qwen2]
graphs:
  - graph: oracle_topk
    params: {{sink_size: 4, window_size: 4}}
    grid: {{heavy_size: [0.1, 0.3]}}
tasks: [ppl]
lengths: [64]
samples: 1
template: plain
text_file: book.txt
"""
    path = sweep_file(tmp_path, text=text)
    out = tmp_path / "out"
    assert run_cli(["sweep", str(path), "--out", str(out), "--no-progress"], capsys)[0] == 0
    rows = raw_rows(out)
    assert sorted({r["label"] for r in rows}) == ["oracle_topk@heavy_size=0.1", "oracle_topk@heavy_size=0.3"]
    assert all(r["overrides"]["sink_size"] == 4 for r in rows)
    assert sorted(m for (m,) in table(out, "SELECT DISTINCT model FROM rows")) == ["tiny-llama", "tiny-qwen2"]
    md = tmp_path / "r.md"
    assert run_cli(["report", str(out), "--out", str(md)], capsys)[0] == 0
    text = md.read_text()
    assert "## tiny-llama" in text and "## tiny-qwen2" in text and "| oracle_topk | heavy_size=0.3 |" in text
    assert (tmp_path / "tiny-qwen2_accuracy_vs_density.png").is_file()


def test_report_gives_runs_of_two_models_a_section_each(tmp_path, capsys):
    from maskgraph.calibrate.text import ByteTokenizer
    from maskgraph.eval.runner import EvalConfig, run_eval
    from maskgraph.hf.models import tiny_model

    sweep_file(tmp_path)
    runs = []
    for name, arch in (("model-a", "llama"), ("model-b", "qwen2")):
        config = EvalConfig(
            model=name, graphs=["streaming_llm"], tasks=["ppl"], lengths=[64], samples=1, densities=[0.5],
            template="plain", text_file=str(tmp_path / "book.txt"),
        )  # fmt: skip
        run_eval(config, tmp_path / name, model=tiny_model(arch), tokenizer=ByteTokenizer(), progress=False)
        runs.append(str(tmp_path / name))
    md = tmp_path / "r.md"
    assert run_cli(["report", *runs, "--out", str(md)], capsys)[0] == 0
    text = md.read_text()
    # the same cell id in both runs: each model keeps its own row
    assert text.count("| streaming_llm | 50% |") == 2 and "## model-a" in text and "## model-b" in text


# ----- failed trials ------------------------------------------------------------------------------
def test_a_failed_trial_keeps_its_traceback_and_does_not_stop_the_others(tmp_path, capsys, monkeypatch):
    text = SWEEP.replace("models: [tiny-llama]", "models: [tiny-llama, tiny-qwen2]")
    path = sweep_file(tmp_path, samples=1, shard=1, text=text)
    out = tmp_path / "out"
    real = trials_module.load_model

    def broken(name, device):
        if name == "tiny-qwen2":
            raise RuntimeError("no such card")
        return real(name, device)

    monkeypatch.setattr(trials_module, "load_model", broken)
    rc, _, err = run_cli(["sweep", str(path), "--out", str(out), "--no-progress"], capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "1 trial(s) failed" in err and "no such card" in err and "--retry-errors" in err
    ((status, error, tb),) = table(
        out, "SELECT status, error, traceback FROM trials WHERE model = 'tiny-qwen2'"
    )
    assert (
        status == "failed" and error == "RuntimeError: no such card" and "Traceback" in tb and "broken" in tb
    )
    failed_id = table(out, "SELECT id FROM trials WHERE status = 'failed'")[0][0]
    assert "no such card" in (out / "trials" / failed_id / "error.txt").read_text()
    assert {r["cell"] for r in raw_rows(out)} and len(raw_rows(out)) == 4  # the other model's trial ran

    # a sweep file that no longer names the failed trial's model has no failure to report
    path.write_text(path.read_text().replace("[tiny-llama, tiny-qwen2]", "[tiny-llama]"))
    rc, stdout, _ = run_cli(["sweep", str(path), "--out", str(out), "--no-progress"], capsys)
    assert rc == 0 and "1 of 1 trials done" in stdout
    path.write_text(path.read_text().replace("[tiny-llama]", "[tiny-llama, tiny-qwen2]"))

    # without --retry-errors a failed trial is not run again
    calls = []
    monkeypatch.setattr(trials_module, "load_model", lambda n, d: calls.append(n) or real(n, d))
    assert run_cli(["sweep", str(path), "--out", str(out), "--no-progress"], capsys)[0] == 1
    assert calls == []
    rc, stdout, _ = run_cli(
        ["sweep", str(path), "--out", str(out), "--no-progress", "--retry-errors"], capsys
    )
    assert rc == 0 and calls == ["tiny-qwen2"] and "2 of 2 trials done" in stdout
    assert table(out, "SELECT status FROM trials WHERE model = 'tiny-qwen2'") == [("done",)]
    assert not (out / "trials" / failed_id / "error.txt").exists()
    assert len(raw_rows(out)) == 8


def test_the_shipped_example_is_a_valid_sweep():
    text = (ROOT / "examples" / "sweep.yaml").read_text()
    # the example names the shipped model, which need not be installed where tests run
    spec = parse_sweep(text.replace("[smollm2]", "[tiny-llama]"), base=ROOT / "examples")
    labels = [v.label for v in spec.trials()[0].variants]
    assert "quest@5%" in labels and "oracle_topk@heavy_size=0.05" in labels and "dense@default" in labels
    assert len(spec.trials()) == 3 * 2 and spec.resources.num_cpus == 1
    gpu = (ROOT / "examples" / "sweep_gpu.yaml").read_text().replace("[smollm2]", "[tiny-llama]")
    spec = parse_sweep(gpu, base=ROOT / "examples")
    assert len(spec.trials()) == 8 and spec.resources.num_gpus == 0.25 and spec.settings["device"] == "cuda"


# ----- bad sweep files and options ----------------------------------------------------------------
BAD = {
    "unknown top key": ("graph: [dense]\nmodels: [tiny-llama]\ntasks: [ppl]\nlengths: [64]\n", 1, ["'graphs'", "valid:"]),
    "missing key": ("models: [tiny-llama]\ngraphs: [dense]\ntasks: [ppl]\n", 1, ["'lengths'"]),
    "unknown task": ("models: [tiny-llama]\ngraphs: [dense]\ntasks:\n  - ppl\n  - needle\nlengths: [64]\n", 5, ["tasks[1]", "niah_single_number"]),
    "density out of range": (
        "models: [tiny-llama]\ngraphs:\n  - graph: quest\n    densities: [0.1, 1.5]\ntasks: [ppl]\nlengths: [64]\n",
        4, ["graphs[0].densities[1]", "(0, 1]"],
    ),
    "grid parameter unknown": (
        "models: [tiny-llama]\ngraphs:\n  - graph: quest\n    grid:\n      heavy: [0.1]\ntasks: [ppl]\nlengths: [64]\n",
        5, ["graphs[0].grid.heavy", "heavy_size"],
    ),
    "grid value invalid": (
        "models: [tiny-llama]\ngraphs:\n  - graph: quest\n    grid:\n      page_size: [0]\ntasks: [ppl]\nlengths: [64]\n",
        5, ["graphs[0].grid.page_size", "quest@page_size=0", "[1, 4096]"],
    ),
    "unknown model": ("models: [gpt5]\ngraphs: [dense]\ntasks: [ppl]\nlengths: [64]\n", 1, ["models[0]", "tiny-llama"]),
    "unknown graph": ("models: [tiny-llama]\ngraphs: [dense, quset]\ntasks: [ppl]\nlengths: [64]\n", 2, ["graphs[1].graph", "quest"]),
    "length too short": ("models: [tiny-llama]\ngraphs: [dense]\ntasks: [ppl]\nlengths: [64, 8]\n", 4, ["lengths[1]", ">= 16"]),
    "negative gpus": (
        "models: [tiny-llama]\ngraphs: [dense]\ntasks: [ppl]\nlengths: [64]\nresources: {num_gpus: -1}\n",
        5, ["resources.num_gpus", "[0, 64]"],
    ),
    "same variant twice": (
        "models: [tiny-llama]\ngraphs:\n  - dense\n  - graph: dense\ntasks: [ppl]\nlengths: [64]\n",
        4, ["graphs[1]", "dense@default", "name"],
    ),
    "search task not in the sweep": (
        "models: [tiny-llama]\ngraphs: [quest]\ntasks: [ppl]\nlengths: [64]\nsearch:\n  densities: [0.1]\n  task: vt\n",
        7, ["search.task", "ppl"],
    ),
    "range upside down": (
        "models: [tiny-llama]\ngraphs:\n  - graph: quest\n    ranges:\n      heavy_size: [0.2, 0.1]\ntasks: [ppl]\nlengths: [64]\n",
        5, ["graphs[0].ranges.heavy_size", "low < high"],
    ),
    "tiny model with the chat template": (
        "models: [tiny-llama]\ngraphs: [dense]\ntasks: [ppl]\nlengths: [64]\ntemplate: chat\n",
        5, ["template", "template: plain"],
    ),
    "invalid YAML": ("models: [tiny-llama\ngraphs: [dense]\n", 2, ["invalid YAML"]),
    "not a mapping": ("- dense\n", 1, ["must be a mapping"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_sweep_file_is_one_located_line(case, tmp_path, capsys):
    text, line, words = BAD[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    rc, _, err = run_cli(["sweep", str(path), "--out", str(tmp_path / "out")], capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert f"{path}:{line}:" in err, err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "out").exists()


def test_options_are_checked_and_ray_missing_says_how_to_install(tmp_path, capsys, monkeypatch):
    path = sweep_file(tmp_path, samples=1, shard=1)
    out = str(tmp_path / "out")
    rc, _, err = run_cli(["sweep", str(path), "--out", out, "--address", "auto"], capsys)
    assert rc == 1 and "--backend ray" in err
    rc, _, err = run_cli(["sweep", str(path), "--out", out, "--gpus", "0,1", "--workers", "3"], capsys)
    assert rc == 1 and "--workers 3" in err
    rc, _, err = run_cli(["sweep", str(path), "--out", out, "--search"], capsys)
    assert rc == 1 and "needs a 'search:' block" in err
    rc, _, err = run_cli(["sweep", str(path), "--out", out, "--gpus", "0"], capsys)
    assert rc == 1 and "device: cuda" in err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    rc, _, err = run_cli(["sweep", str(path), "--out", out, "--backend", "ray", "--no-progress"], capsys)
    assert rc == 1 and "pip install 'maskgraph[ray]'" in err and len(err.strip().splitlines()) == 1


# ----- interrupted sweeps -------------------------------------------------------------------------
def default_sigint() -> None:
    """In the child before it starts: SIGINT back to its default action. A job started in the
    background of a non-interactive shell (CI runners may start the tests so) inherits SIGINT
    ignored, and Python then installs no KeyboardInterrupt for it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_midway(path: Path, out: Path, workers: int, signum: int) -> tuple[int, str]:
    """Start ``maskgraph sweep`` on ``path``, send it ``signum`` once 4 rows have landed and
    return its exit status and stderr."""
    cmd = [sys.executable, "-m", "maskgraph", "sweep", str(path), "--out", str(out), "--no-progress"]
    cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )
    deadline = time.monotonic() + 120
    while len(raw_rows(out)) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


@pytest.mark.parametrize(
    "signum, workers",
    [
        (signal.SIGTERM, 1),
        pytest.param(signal.SIGINT, 1, marks=pytest.mark.slow),
        pytest.param(signal.SIGTERM, 2, marks=pytest.mark.slow),
    ],
)
def test_an_interrupted_sweep_resumes_with_every_pair_once(signum, workers, tmp_path):
    path = sweep_file(tmp_path, samples=12, shard=4)
    out = tmp_path / "out"
    returncode, err = interrupt_midway(path, out, workers, signum)
    assert returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert "leaked" not in err  # worker processes ended cleanly
    before = len(raw_rows(out))
    assert 4 <= before < 48  # stopped midway

    # the rerun finishes the rest; the local backend never imports Ray (a fresh process: this
    # one may have imported Ray for another test)
    rerun = "import sys; from maskgraph.cli.main import main; rc = main(sys.argv[1:]); "
    rerun += "assert 'ray' not in sys.modules, 'ray imported'; sys.exit(rc)"
    done = subprocess.run(
        [sys.executable, "-c", rerun, "sweep", str(path), "--out", str(out), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pairs = Counter((r["cell"], r["index"]) for r in raw_rows(out))
    assert len(pairs) == 4 * 12 and set(pairs.values()) == {1}


# ----- worker processes and Ray: the same rows ----------------------------------------------------
RAY_STORE = 100 * 2**20  # bytes of object store: a local Ray here holds a few small results


@pytest.fixture
def one_ray_at_a_time(tmp_path_factory):
    """pytest-xdist's workers take turns with Ray: one small local cluster at a time (the base
    temporary folder's parent is shared by the workers of one run)."""
    from filelock import FileLock

    with FileLock(str(tmp_path_factory.getbasetemp().parent / "maskgraph-ray.lock")):
        yield


@pytest.mark.slow
def test_local_workers_and_ray_give_the_rows_of_one_worker(tmp_path, monkeypatch, one_ray_at_a_time):
    ray = pytest.importorskip("ray")
    path = sweep_file(tmp_path, samples=3, shard=2)
    spec = parse_sweep(path.read_text(), file=str(path), base=tmp_path)
    text = path.read_text()
    one = run_sweep(spec, tmp_path / "one", text, progress=False)
    assert one.done == 2 and not one.failed
    two = run_sweep(spec, tmp_path / "two", text, BackendOptions(workers=2), progress=False)
    assert two.done == 2 and comparable(tmp_path / "two") == comparable(tmp_path / "one")

    # a real local Ray started by the caller; its workers import this checkout's maskgraph
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    ray.init(num_cpus=2, object_store_memory=RAY_STORE, include_dashboard=False, log_to_driver=False)
    try:
        got = run_sweep(spec, tmp_path / "ray", text, BackendOptions(backend="ray"), progress=False)
        assert ray.is_initialized()  # a Ray the caller started is left running
    finally:
        ray.shutdown()
    assert got.done == 2 and not got.failed
    assert comparable(tmp_path / "ray") == comparable(tmp_path / "one")
    assert len(comparable(tmp_path / "one")) == 12


# ----- search -------------------------------------------------------------------------------------
SEARCH = """\
models: [tiny-llama]
graphs:
  - graph: oracle_topk
    params: {{sink_size: 4, window_size: 4}}
    grid: {{heavy_size: [0.05, 0.6]}}
tasks: [ppl]
lengths: [64]
samples: 1
template: plain
text_file: book.txt
search: {{densities: [0.3], samples: 1}}
"""


@pytest.mark.slow
def test_search_picks_the_setting_that_reaches_the_target_and_writes_a_usable_graph(
    tmp_path, monkeypatch, one_ray_at_a_time
):
    ray = pytest.importorskip("ray")
    from maskgraph.eval.search import run_search
    from maskgraph.eval.sweeprun import init_ray
    from maskgraph.loader import load_graph

    path = sweep_file(tmp_path, text=SEARCH)
    spec = parse_sweep(path.read_text(), file=str(path), base=tmp_path)
    # the Ray that init_ray starts (as run_search does, here small) makes its workers import
    # this checkout's maskgraph
    monkeypatch.delenv("PYTHONPATH", raising=False)
    init_ray(ray, None, num_cpus=2, object_store_memory=RAY_STORE)
    try:
        (choice,) = run_search(spec, tmp_path / "out")
    finally:
        ray.shutdown()
    # heavy_size 0.6 measures far above 30%: the search keeps 0.05, and reports what it measured
    assert choice.feasible and choice.trials == 2 and choice.overrides["heavy_size"] == 0.05
    assert choice.density is not None and choice.density <= 0.3 * 1.1 and choice.rel_err is not None
    recorded = json.loads((tmp_path / "out" / "search" / "results.json").read_text())
    assert recorded[0]["density"] == choice.density
    graph = load_graph(choice.file)
    assert graph.name == "oracle_topk_at_30pct" and graph.params["heavy_size"] == 0.05
    assert graph.params["sink_size"] == 4


def test_a_worker_process_sees_its_gpu_only_and_leaves_interrupts_to_the_sweep(monkeypatch):
    from maskgraph.eval import sweeprun

    # setenv first: monkeypatch restores the variable (or its absence) after the test
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        sweeprun.worker_setup("3")
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is sweeprun._exit_on_terminate
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)


def test_a_result_that_arrives_after_its_trial_was_failed_is_ignored():
    from types import SimpleNamespace

    from maskgraph.eval import sweeprun
    from maskgraph.eval.trials import TrialResult

    spec = parse_sweep(
        "models: [tiny-llama]\ngraphs: [dense]\ntasks: [ppl]\nlengths: [64]\ntemplate: plain\n"
    )
    (trial,) = spec.trials()
    busy, idle = SimpleNamespace(trial=trial), SimpleNamespace(trial=None)
    got: list[TrialResult] = []
    stale = TrialResult("0123456789ab", "done", 1.0)
    assert not sweeprun.accept([busy, idle], stale, got.append) and got == [] and busy.trial is trial
    fresh = TrialResult(trial.id, "done", 1.0)
    assert sweeprun.accept([busy, idle], fresh, got.append) and got == [fresh] and busy.trial is None


@pytest.mark.slow
def test_a_worker_process_that_dies_fails_its_trial_only(tmp_path):
    import multiprocessing
    import threading

    path = sweep_file(tmp_path, samples=12, shard=6)
    spec = parse_sweep(path.read_text(), file=str(path), base=tmp_path)
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_one_busy_worker():
        deadline = time.monotonic() + 120
        while not raw_rows(out) and time.monotonic() < deadline:
            time.sleep(0.05)
        victim = multiprocessing.active_children()[0]
        killed.append(victim.pid)
        os.kill(victim.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_one_busy_worker)
    killer.start()
    summary = run_sweep(spec, out, path.read_text(), BackendOptions(workers=2), progress=False)
    killer.join()
    assert killed and summary.done == 1 and len(summary.failed) == 1
    (error,) = summary.failed.values()
    assert "killed by signal 9" in error
    again = run_sweep(
        spec, out, path.read_text(), BackendOptions(workers=2), retry_errors=True, progress=False
    )
    assert again.done == 2 and not again.failed
    pairs = Counter((r["cell"], r["index"]) for r in raw_rows(out))
    assert len(pairs) == 4 * 12 and set(pairs.values()) == {1}


class FakeRay:
    """Just enough of Ray's API for the Ray backend's scheduling: actors run trials in this
    process; the actor given a trial in ``doomed`` dies instead (as on an out-of-memory kill)."""

    class exceptions:
        class RayError(Exception):
            pass

    def __init__(self, doomed: set[str]) -> None:
        self.doomed = doomed
        self.created = 0
        self.killed = 0

    def is_initialized(self):
        return True

    def cluster_resources(self):
        return {"CPU": 2.0}

    def remote(self, **resources):
        fake = self

        def wrap(cls):
            class Handle:
                def __init__(self):
                    self.worker = cls()
                    run = self.worker.run

                    class Method:
                        @staticmethod
                        def remote(root, trial, retry):
                            if trial.id in fake.doomed:
                                return fake.exceptions.RayError("the actor died unexpectedly")
                            return run(root, trial, retry)

                    self.run = Method

            class Factory:
                @staticmethod
                def remote():
                    fake.created += 1
                    return Handle()

            return Factory

        return wrap

    def wait(self, refs, num_returns, timeout):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if isinstance(ref, Exception):
            raise ref
        return ref

    def kill(self, actor):
        self.killed += 1


def test_a_dead_ray_actor_fails_its_trial_and_is_replaced(tmp_path, monkeypatch):
    from maskgraph.eval import sweeprun

    path = sweep_file(tmp_path, samples=3, shard=1)
    spec = parse_sweep(path.read_text(), file=str(path), base=tmp_path)
    doomed = spec.trials()[0].id
    fake = FakeRay({doomed})
    monkeypatch.setattr(sweeprun, "import_ray", lambda: fake)
    summary = run_sweep(
        spec, tmp_path / "out", path.read_text(), BackendOptions(backend="ray"), progress=False
    )
    assert summary.done == 2 and list(summary.failed) == [doomed]
    assert "the actor died unexpectedly" in summary.failed[doomed]
    (tb,) = table(tmp_path / "out", f"SELECT traceback FROM trials WHERE id = '{doomed}'")[0]
    assert "RayError" in tb
    assert fake.created == 3 and fake.killed == 3  # two actors, one replaced; all killed at the end
    assert len(raw_rows(tmp_path / "out")) == 2 * 4


# ----- benchmark tasks and their data, default calibration files --------------------------------
BENCH = ROOT / "tests" / "data" / "benchmarks"
BENCH_SWEEP = """\
models: [tiny-llama]
graphs: [dense]
tasks: [longbench:qasper]
lengths: [256]
samples: 2
template: plain
"""


def test_a_sweep_takes_benchmark_tasks_with_data_relative_to_the_sweep_file(tmp_path):
    rel = os.path.relpath(BENCH / "longbench", tmp_path)
    spec = parse_sweep(BENCH_SWEEP + f"data: {rel}\n", file="s.yaml", base=tmp_path)
    (trial,) = spec.trials()
    assert trial.task == "longbench:qasper" and trial.identity()["data"] == str(BENCH / "longbench")
    assert trial.eval_config().data == str(BENCH / "longbench")
    shutil.copytree(BENCH / "longbench", tmp_path / "copy")
    other = parse_sweep(BENCH_SWEEP + "data: copy\n", base=tmp_path)
    assert other.trials()[0].id != trial.id
    # a sweep without data keeps its trial ids: data is not in their identity
    plain = parse_sweep(
        "models: [tiny-llama]\ngraphs: [dense]\ntasks: [ppl]\nlengths: [64]\ntemplate: plain\n"
    )
    assert "data" not in plain.trials()[0].identity()


@pytest.mark.parametrize(
    "extra, line, words",
    [
        ("", 3, ["tasks", "longbench:qasper", "no 'data:' was given"]),
        ("data: nowhere\n", 6, ["data:", "no such file or folder", "nowhere"]),
        ("data: {empty}\n", 6, ["data:", "longbench:qasper", "nothing of it was found"]),
        ("data: {longbench}\nsamples: 99\n", 6, ["data:", "--samples 99"]),
    ],
)
def test_missing_benchmark_data_is_a_located_error_before_any_model_loads(extra, line, words, tmp_path):
    from maskgraph.errors import SweepFileError

    (tmp_path / "empty").mkdir()
    text = BENCH_SWEEP.replace("samples: 2\n", "") + extra.format(
        empty=tmp_path / "empty", longbench=BENCH / "longbench"
    )
    with pytest.raises(SweepFileError) as info:
        parse_sweep(text, file="s.yaml", base=tmp_path)
    message = str(info.value)
    assert f"s.yaml:{line}" in message and all(w in message for w in words), message


def test_an_unknown_benchmark_sub_task_is_located():
    from maskgraph.errors import SweepFileError

    with pytest.raises(SweepFileError, match=r"s.yaml:3.*tasks\[0\].*unknown LongBench sub-task 'qaspr'"):
        parse_sweep(BENCH_SWEEP.replace("qasper", "qaspr"), file="s.yaml")


def test_a_benchmark_sweep_runs_into_the_store(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    text = BENCH_SWEEP.replace("longbench:qasper", "infinitebench:passkey").replace(
        "samples: 2", "samples: 1"
    )
    path.write_text(text + f"data: {BENCH / 'infinitebench'}\n")
    out = tmp_path / "out"
    rc, stdout, _ = run_cli(["sweep", str(path), "--out", str(out), "--no-progress"], capsys)
    assert rc == 0 and "1 of 1 trials done" in stdout
    assert table(out, "SELECT DISTINCT status FROM rows") == [("ok",)]


DS_SWEEP = "models: [tiny-llama]\ngraphs:\n  - graph: double_sparsity\ntasks: [ppl]\nlengths: [64]\ntemplate: plain\n"


def test_a_sweep_finds_the_calibration_file_maskgraph_calibrate_wrote(tmp_path, monkeypatch):
    from maskgraph.calibrate.formats import DOUBLE_SPARSITY
    from maskgraph.calibrate.models import default_out
    from maskgraph.errors import SweepFileError
    from maskgraph.eval.search import _calibration

    monkeypatch.setenv("MASKGRAPH_CACHE", str(tmp_path / "cache"))
    file = default_out("tiny-llama", DOUBLE_SPARSITY)
    with pytest.raises(SweepFileError) as info:
        parse_sweep(DS_SWEEP, file="s.yaml")
    message = str(info.value)
    assert "s.yaml:3" in message and str(file) in message
    assert "maskgraph calibrate double-sparsity --model tiny-llama" in message

    file.parent.mkdir(parents=True)
    file.write_bytes(b"")
    spec = parse_sweep(DS_SWEEP, file="s.yaml")
    (variant,) = spec.trials()[0].variants
    assert variant.overrides["ds_channels"] == str(file)
    assert trials_module.build_variant(variant).graph.resolve("$ds_channels") == str(file)
    # --search starts from the same file
    assert _calibration(spec.to_json(), spec.graphs[0]) == {"ds_channels": str(file)}
    # an explicit file wins
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"")
    text = DS_SWEEP.replace("double_sparsity\n", f"double_sparsity\n    params: {{ds_channels: {mine}}}\n")
    (variant,) = parse_sweep(text).trials()[0].variants
    assert variant.overrides["ds_channels"] == str(mine)


def test_eval_and_sweep_share_the_default_calibration_lookup(tmp_path, monkeypatch):
    from maskgraph.calibrate.formats import DOUBLE_SPARSITY
    from maskgraph.calibrate.models import default_out
    from maskgraph.errors import MaskgraphError
    from maskgraph.eval.calibration import default_calibration
    from maskgraph.loader import load_graph

    monkeypatch.setenv("MASKGRAPH_CACHE", str(tmp_path / "cache"))
    file = default_out("tiny-llama", DOUBLE_SPARSITY)
    file.parent.mkdir(parents=True)
    file.write_bytes(b"")
    ds = load_graph("double_sparsity")
    assert default_calibration({"double_sparsity": ds}, {}, "tiny-llama") == {"ds_channels": str(file)}
    # one graph sets the parameter itself, the other takes the default under the same name
    mine = ds.with_overrides({"ds_channels": str(tmp_path / "mine.safetensors")})
    with pytest.raises(MaskgraphError, match="mine.yaml sets ds_channels itself"):
        default_calibration({"double_sparsity": ds, "mine.yaml": mine}, {}, "tiny-llama")
