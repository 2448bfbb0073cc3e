"""ZeroSCROLLS (tau-nlp/zero_scrolls): the benchmark's own prompts, truncation and metrics.

Rows (``<task>/validation.jsonl`` of the Hugging Face dataset tau/zero_scrolls): ``id``,
``pid``, ``input`` (the whole prompt: instructions, document, query and answer cue),
``output``, ``document_start_index``, ``document_end_index``, ``query_start_index``,
``query_end_index``, ``truncation_seperator``. The prompt is split at ``query_start_index``;
truncation cuts the document's end and inserts the row's separator. The test split's answers
are not public: use the validation split. Not included: space_digest and book_sum_sort
(scored by exponential similarity and concordance index).
"""

from __future__ import annotations

from typing import Any

from ...errors import BenchmarkDataError
from .prompt import Benchmark, Item, SubTask, subtasks

#: (task, metric); ZeroSCROLLS lets every task generate up to 1,024 tokens.
_TASKS = (
    ("gov_report", "rouge_geometric"),
    ("summ_screen_fd", "rouge_geometric"),
    ("qmsum", "rouge_geometric"),
    ("squality", "rouge_geometric"),
    ("qasper", "qa_f1"),
    ("narrative_qa", "qa_f1"),
    ("musique", "qa_f1"),
    ("quality", "exact_match"),
)
MAX_NEW_TOKENS = 1024


def _items(row: dict[str, Any], sub: SubTask, plain: bool) -> list[Item]:
    if row.get("output") is None:
        raise BenchmarkDataError(
            f"ZeroSCROLLS {sub.name} row {row.get('id')!r} has no answer (the test split's are not "
            "public); point --data at the validation split"
        )
    text = str(row["input"])
    start = int(row["query_start_index"])
    return [
        Item(
            document=text[:start],
            query=text[start:],
            answers=(str(row["output"]),),
            separator=str(row.get("truncation_seperator") or ""),
        )
    ]


ZEROSCROLLS = Benchmark(
    name="zeroscrolls",
    title="ZeroSCROLLS",
    source="the Hugging Face dataset tau/zero_scrolls (its <task>.zip holds <task>/validation.jsonl)",
    files="<task>/validation.jsonl per task, e.g. qasper/validation.jsonl",
    columns=("id", "input", "output", "query_start_index", "truncation_seperator"),
    truncation="keep_start",
    subtasks=subtasks(
        *(SubTask(n, m, MAX_NEW_TOKENS, stems=(f"{n}/validation", n), chat=True) for n, m in _TASKS)
    ),
    items=_items,
    splits=("validation", "test"),
)
