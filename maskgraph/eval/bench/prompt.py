"""Benchmark sub-tasks, their filled prompts, and the truncation rules that fit them to a length.

A prompt is split where its document ends: the **document** part (instructions and the long
text) is what the default protocol prefills densely; the **query** part (question, options,
answer cue) and the answer go through the graph, as with the synthetic tasks.

Truncation rules, each as its benchmark applies it to the prompt's tokens:

- ``middle`` (LongBench v1 and v2, InfiniteBench, LooGLE): a prompt longer than the budget
  keeps its first ``budget // 2`` and last ``budget // 2`` tokens, decoded separately and
  joined. The query stays the query when the kept end still ends with it whole; otherwise the
  kept first half is the document and the kept last half the query;
- ``keep_start`` (ZeroSCROLLS): the document part is cut at its end so that it, the
  benchmark's truncation separator and the query fit the budget;
- ``none`` (RULER): its files are prepared at one length; a longer prompt is refused.

Under ``--template plain`` the prompt is the benchmark's own text, unwrapped. The budget is
the cell's length less the tokens of the chat wrapping (and of RULER's answer
prefix), so the whole prompt holds at most about ``length`` tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import BenchmarkDataError, MaskgraphError
from ..tasks import Sample, Template, Tokenizer

KIND = "benchmark"
#: No wrapping at all: the benchmark's prompt exactly (plain prompts, LongBench's few-shot tasks).
UNWRAPPED = Template(prefix="", suffix="")
TRUNCATIONS = ("middle", "keep_start", "none")


@dataclass(frozen=True)
class Item:
    """One benchmark question filled in its template, before truncation."""

    document: str
    query: str
    answers: tuple[str, ...]
    classes: tuple[str, ...] = ()
    answer_prefix: str = ""
    separator: str = ""


@dataclass(frozen=True)
class SubTask:
    """One sub-task: its scoring rule, answer length, template(s) and file stems.

    ``template`` fills with the row's fields; ``{context}`` marks where the document ends.
    ``plain_template`` (when set) is used under ``--template plain``; ``chat=False`` keeps the
    prompt unwrapped even under ``--template chat`` (LongBench's few-shot and code tasks).
    ``select`` is a value of the benchmark's filter column (LongBench v2's domain).
    """

    name: str
    metric: str
    max_new_tokens: int
    template: str = ""
    plain_template: str = ""
    stems: tuple[str, ...] = ()
    chat: bool = True
    select: str = ""


ItemMaker = Callable[[dict[str, Any], SubTask, bool], list[Item]]


@dataclass(frozen=True)
class Benchmark:
    """A benchmark: where its files come from, their schema, and its sub-tasks.

    ``items(row, subtask, plain)`` turns one row into the sub-task's items (none for a row of
    another sub-task, several for a LooGLE document with several questions).
    """

    name: str
    title: str
    source: str
    files: str
    columns: tuple[str, ...]
    truncation: str
    subtasks: dict[str, SubTask]
    items: ItemMaker
    splits: tuple[str, ...] = ("test", "validation", "train")

    def expected(self, subtask: SubTask) -> str:
        """What ``--data`` should hold for ``subtask`` (for error messages)."""
        stems = " or ".join(f"{s}.jsonl/.json/.parquet" for s in subtask.stems)
        return (
            f"{self.title} files ({self.files}; {stems}, or a datasets.save_to_disk folder) with "
            f"columns {', '.join(self.columns)}; get them from {self.source}"
        )


def subtasks(*specs: SubTask) -> dict[str, SubTask]:
    return {s.name: s for s in specs}


def fill(template: str, fields: dict[str, Any]) -> tuple[str, str]:
    """(document part, query part) of ``template`` filled with ``fields``, split after the
    ``{context}`` slot."""
    at = template.index("{context}") + len("{context}")
    return template[:at].format(**fields), template[at:].format(**fields)


# ----- truncation -------------------------------------------------------------------------------
def middle_truncate(ids: list[int], budget: int) -> tuple[list[int], list[int]]:
    """LongBench's rule: the first and last ``budget // 2`` tokens of ``ids`` (all of ``ids``
    as the first part when it fits in ``budget``)."""
    if budget < 2:
        raise MaskgraphError(f"a truncation budget of {budget} tokens is too small")
    if len(ids) <= budget:
        return list(ids), []
    half = budget // 2
    return list(ids[:half]), list(ids[len(ids) - half :])


def _encode(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def _decode(tokenizer: Tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


def fit(item: Item, rule: str, tokenizer: Tokenizer, budget: int, where: str) -> tuple[str, str]:
    """(document text, query text) of ``item`` fitted to ``budget`` tokens by ``rule``."""
    if rule not in TRUNCATIONS:
        raise MaskgraphError(f"unknown truncation rule {rule!r}; valid: {', '.join(TRUNCATIONS)}")
    ids = _encode(tokenizer, item.document + item.query)
    if len(ids) <= budget:
        return item.document, item.query
    if rule == "none":
        raise BenchmarkDataError(
            f"{where} has {len(ids)} prompt tokens, more than the {budget} that the length allows; "
            "RULER prepares each length separately: point --data at the files prepared for this length"
        )
    if rule == "keep_start":
        tail = _encode(tokenizer, item.separator + item.query)
        keep = budget - len(tail)
        if keep < 1:
            raise MaskgraphError(f"{where}: the query alone ({len(tail)} tokens) exceeds the budget {budget}")
        return _decode(tokenizer, _encode(tokenizer, item.document)[:keep]) + item.separator, item.query
    first, last = middle_truncate(ids, budget)
    head, tail = _decode(tokenizer, first), _decode(tokenizer, last)
    if item.query and tail.endswith(item.query):
        return head + tail[: len(tail) - len(item.query)], item.query
    return head, tail


def build_sample(
    task: str,
    benchmark: Benchmark,
    subtask: SubTask,
    item: Item,
    tokenizer: Tokenizer,
    length: int,
    index: int,
    template: Template,
    where: str,
) -> Sample:
    """The :class:`~maskgraph.eval.tasks.Sample` of ``item`` fitted to ``length`` tokens."""
    wrap = template if subtask.chat else UNWRAPPED
    overhead = sum(len(_encode(tokenizer, t)) for t in (wrap.prefix, wrap.suffix, item.answer_prefix))
    document, query = fit(item, benchmark.truncation, tokenizer, length - overhead, where)
    context = wrap.prefix + document
    question = query + wrap.suffix + item.answer_prefix
    if not context.strip() or not question.strip():
        raise BenchmarkDataError(f"{where}: the prompt has an empty document or query part after fitting")
    return Sample(
        task=task,
        index=index,
        length=length,
        context=context,
        question=question,
        answers=item.answers,
        metric=subtask.metric,
        kind=KIND,
        max_new_tokens=subtask.max_new_tokens,
        n_tokens=len(_encode(tokenizer, context + question)),
        classes=item.classes,
    )
