"""LooGLE (bigai-nlco/LooGLE): prompts, answer lengths and automatic metrics per task.

Rows (``<task>.jsonl``, as in the repository's ``LooGLE-testdata/`` and the Hugging Face
dataset bigai/LooGLE): ``input`` (the document), ``title``, ``qa_pairs`` (a Python literal:
a list of ``{'Q': …, 'A': …, 'S': …}``, or ``'none'`` for summaries), ``output`` (the
summary). Every question of a document is one sample, in file order. Metrics: ROUGE-L recall
of the ``rouge`` package (the default of LooGLE's automatic evaluation) for QA and summaries;
the share of masks filled exactly (LooGLE's exact match) for the cloze task.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from ...errors import BenchmarkDataError
from .prompt import Benchmark, Item, SubTask, fill, subtasks

_QA = "Please answer the question based on the long texts below. \n{context}\nQuestion: {Q}\nAnswer: "
_TASKS = (
    SubTask("shortdep_qa", "rouge_l_recall", 300, _QA, stems=("shortdep_qa",)),
    SubTask("longdep_qa", "rouge_l_recall", 500, _QA, stems=("longdep_qa",)),
    SubTask(
        "longdep_summarization",
        "rouge_l_recall",
        500,
        "Please generate a summary of the below paper. \n{context}\n Summarization: ",
        stems=("longdep_summarization",),
    ),
    SubTask(
        "shortdep_cloze",
        "cloze_exact",
        50,
        "Please fill in the clozes based on the given long texts below. Each of the placeholder "
        "'<mask-n>' in the question could be an entity of Person, Location or Organiocation. The same "
        "masks represent the same entity. Output a json format answer, for example: {{'<mask-0>': "
        "'Bob', '<mask-1>': 'Gorrosion Magazine','<mask-2>': 'Bethel Horizon'}}\n{context}\n "
        "Question: {Q} What are the masked entities? \nAnswer:",
        stems=("shortdep_cloze",),
    ),
)


def _literal(text: Any, what: str) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise BenchmarkDataError(f"LooGLE {what} is not a Python literal: {text[:80]!r}") from exc


def _items(row: dict[str, Any], sub: SubTask, plain: bool) -> list[Item]:
    pairs = row["qa_pairs"]
    if pairs == "none" or pairs is None:
        document, query = fill(sub.template, {"context": row["input"], "Q": ""})
        return [Item(document=document, query=query, answers=(str(row["output"]),))]
    items = []
    for pair in _literal(pairs, f"qa_pairs of {row.get('title')!r}"):
        answer = pair["A"]
        if sub.metric == "cloze_exact":
            answer = json.dumps(_literal(answer, f"cloze answer of {row.get('title')!r}"), ensure_ascii=False)
        document, query = fill(sub.template, {"context": row["input"], "Q": pair["Q"]})
        items.append(Item(document=document, query=query, answers=(str(answer),)))
    return items


LOOGLE = Benchmark(
    name="loogle",
    title="LooGLE",
    source="the Hugging Face dataset bigai/LooGLE, or LooGLE-testdata/ of github.com/bigai-nlco/LooGLE",
    files="one <task>.jsonl per task, e.g. shortdep_qa.jsonl",
    columns=("input", "title", "qa_pairs", "output"),
    truncation="middle",
    subtasks=subtasks(*_TASKS),
    items=_items,
)
