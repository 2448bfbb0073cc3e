"""The standard long-context benchmarks as ``maskgraph eval`` tasks, read from a local copy.

A task is spelled ``<benchmark>:<sub-task>``, e.g. ``longbench:qasper``, ``ruler:niah_single_1``,
``longbench_v2:all``. :data:`BENCHMARKS` is the one table of benchmarks and their sub-tasks;
the CLI's help, the task check and the runner all read it. Each benchmark module holds its
prompt templates, answer lengths, truncation rule and metric per sub-task (see
``docs/benchmarks-data.md`` for the files to fetch and how to point ``--data`` at them).
"""

from __future__ import annotations

import functools
from pathlib import Path

from ...errors import BenchmarkDataError, MaskgraphError
from ..tasks import Sample, Template, Tokenizer
from .data import check_columns, find, read_rows
from .infinitebench import INFINITEBENCH
from .longbench import LONGBENCH, LONGBENCH_V2
from .loogle import LOOGLE
from .prompt import KIND, UNWRAPPED, Benchmark, Item, SubTask, build_sample
from .ruler import RULER
from .zeroscrolls import ZEROSCROLLS

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b for b in (LONGBENCH, LONGBENCH_V2, RULER, INFINITEBENCH, LOOGLE, ZEROSCROLLS)
}

__all__ = [
    "BENCHMARKS",
    "KIND",
    "BenchmarkDataError",
    "bench_task_names",
    "check_data",
    "is_bench_task",
    "load_items",
    "resolve",
    "sample",
]


def bench_task_names() -> list[str]:
    """Every ``<benchmark>:<sub-task>`` name."""
    return [f"{b.name}:{s}" for b in BENCHMARKS.values() for s in b.subtasks]


def is_bench_task(task: str) -> bool:
    return ":" in task


def resolve(task: str) -> tuple[Benchmark, SubTask]:
    """The benchmark and sub-task of ``task`` (``<benchmark>:<sub-task>``)."""
    name, _, sub = task.partition(":")
    if name not in BENCHMARKS:
        raise MaskgraphError(f"unknown benchmark {name!r} in task {task!r}; valid: {', '.join(BENCHMARKS)}")
    bench = BENCHMARKS[name]
    if sub not in bench.subtasks:
        raise MaskgraphError(
            f"unknown {bench.title} sub-task {sub!r} in task {task!r}; valid: {', '.join(bench.subtasks)}"
        )
    return bench, bench.subtasks[sub]


def _missing(bench: Benchmark, sub: SubTask, data: str | None) -> BenchmarkDataError:
    tried = "no --data was given" if data is None else f"nothing of it was found under {data}"
    return BenchmarkDataError(f"task {bench.name}:{sub.name} needs {bench.expected(sub)}; {tried}")


@functools.lru_cache(maxsize=64)
def _load(task: str, data: str, plain: bool) -> tuple[Path, tuple[Item, ...]]:
    bench, sub = resolve(task)
    path = find(Path(data).expanduser(), sub.stems)
    if path is None:
        raise _missing(bench, sub, data)
    rows = read_rows(path, bench.splits)
    check_columns(path, rows, bench.columns, bench.expected(sub))
    items = tuple(item for row in rows for item in bench.items(row, sub, plain))
    return path, items


def load_items(task: str, data: str | None, plain: bool = False) -> tuple[Path, tuple[Item, ...]]:
    """(the file or folder read, every item of ``task`` in file order) from ``data``."""
    bench, sub = resolve(task)
    if data is None:
        raise _missing(bench, sub, data)
    return _load(task, str(data), plain)


def check_data(tasks: list[str], data: str | None, samples: int, plain: bool = False) -> None:
    """Read every benchmark task's rows now, so a missing or short file stops the run before
    the model loads; ``samples`` rows are needed per task."""
    for task in tasks:
        if not is_bench_task(task):
            continue
        path, items = load_items(task, data, plain)
        if len(items) < samples:
            raise BenchmarkDataError(
                f"task {task}: {path} holds {len(items)} samples; --samples {samples} asked for"
            )


def sample(
    task: str,
    data: str | None,
    tokenizer: Tokenizer,
    length: int,
    index: int,
    template: Template,
    plain: bool = False,
) -> Sample:
    """Item ``index`` of ``task`` as a :class:`Sample` fitted to ``length`` tokens; ``plain``
    picks a benchmark's base-model prompts where it has them (``--template plain``)."""
    bench, sub = resolve(task)
    path, items = load_items(task, data, plain)
    if plain:
        template = UNWRAPPED
    if index >= len(items):
        raise BenchmarkDataError(f"task {task}: {path} holds {len(items)} samples; sample {index} asked for")
    return build_sample(
        task, bench, sub, items[index], tokenizer, length, index, template, f"{path} sample {index}"
    )
