"""RULER (NVIDIA/RULER) from the files its ``scripts/data/prepare.py`` writes.

RULER generates its data per model tokenizer and length: ``<task>/validation.jsonl`` with
``index``, ``input`` (the whole prompt), ``outputs`` (list), ``length`` and, in newer versions,
``answer_prefix``. Prepare with ``--model_template_type base`` so that the prompt carries no
chat wrapping of its own (``maskgraph eval --template chat`` adds the model's). The prompt's
last line is the question (what goes through the graph); the rest is the document.
Scoring: ``string_match_all`` for every task except QA (``string_match_part``).
"""

from __future__ import annotations

from typing import Any

from ...errors import BenchmarkDataError
from .prompt import Benchmark, Item, SubTask, subtasks

#: (task, metric, tokens to generate); the number of new tokens is RULER's per task family.
_TASKS = (
    *((f"niah_single_{i}", "string_match_all", 128) for i in (1, 2, 3)),
    *((f"niah_multikey_{i}", "string_match_all", 128) for i in (1, 2, 3)),
    ("niah_multivalue", "string_match_all", 128),
    ("niah_multiquery", "string_match_all", 128),
    ("vt", "string_match_all", 30),
    ("cwe", "string_match_all", 120),
    ("fwe", "string_match_all", 50),
    ("qa_1", "string_match_part", 32),
    ("qa_2", "string_match_part", 32),
)


def _items(row: dict[str, Any], sub: SubTask, plain: bool) -> list[Item]:
    text = str(row["input"])
    cut = text.rstrip("\n").rfind("\n")
    if cut < 0:
        raise BenchmarkDataError(
            f"RULER row {row.get('index')!r} of {sub.name}: the prompt has no line break before its "
            "question (prepared with --remove_newline_tab?); prepare the data without it"
        )
    return [
        Item(
            document=text[: cut + 1],
            query=text[cut + 1 :],
            answers=tuple(str(a) for a in row["outputs"]),
            answer_prefix=str(row.get("answer_prefix") or ""),
        )
    ]


RULER = Benchmark(
    name="ruler",
    title="RULER",
    source=(
        "github.com/NVIDIA/RULER: run scripts/data/prepare.py (--model_template_type base) for your "
        "model's tokenizer and length"
    ),
    files="<task>/validation.jsonl per task, e.g. niah_single_1/validation.jsonl",
    columns=("index", "input", "outputs"),
    truncation="none",
    subtasks=subtasks(*(SubTask(n, m, k, stems=(f"{n}/validation", n)) for n, m, k in _TASKS)),
    items=_items,
    splits=("validation", "test", "train"),
)
