"""InfiniteBench (OpenBMB/InfiniteBench): prompts, answer lengths and metrics per task.

Rows (``<task>.jsonl`` of the Hugging Face dataset xinrongzhang2022/InfiniteBench): ``id``,
``context``, ``input``, ``answer`` (a list), ``options`` (a list; the choice tasks). The
prompts are the benchmark's chat-model set (its GPT-4 templates) under ``--template chat`` and
its base-model set (its Yarn-Mistral templates) under ``--template plain``. Not included:
``math_calc`` (answers of up to 30,000 tokens, scored against GPT-4's own output format).
"""

from __future__ import annotations

import re
from typing import Any

from ...errors import BenchmarkDataError
from .prompt import Benchmark, Item, SubTask, fill, subtasks

_HIDDEN = "There is an important info hidden inside a lot of irrelevant text. Find it"
_DIALOGUE = (
    "Below is a dialogue script where one random occurrence of a character name is replaced with "
    '"$$MASK$$", and you should try to guess who that character is.'
)
_OPTIONS = "A. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\nD. {OPTION_D}"

#: task -> (metric, max new tokens, chat-model template, base-model template)
_TASKS: dict[str, tuple[str, int, str, str]] = {
    "passkey": (
        "first_integer", 6,
        f"{_HIDDEN} and memorize them. I will quiz you about the important information there.\n\n"
        "{context}\n\n{input}",
        f"{_HIDDEN} and memorize it. I will quiz you about the important information.\n\n{{context}}\n\n"
        "{input}\n\nThe pass key is",
    ),
    "number_string": (
        "first_integer", 12,
        f"{_HIDDEN}. I will quiz you about the important information there.\n\n{{context}}\n\n{{input}}",
        f"{_HIDDEN}. I will quiz you about the important information there.\n\n{{context}}\n\n{{input}}"
        "\n\nThe sequence of digits is",
    ),
    "kv_retrieval": (
        "kv_retrieval", 50,
        "Extract the value corresponding to the specified key in the JSON object below.\n\n{context}\n\n{input}",
        "Extract the value corresponding to the specified key in the JSON object below.\n\n{context}\n\n{input}",
    ),
    "longbook_sum_eng": (
        "rouge_lsum", 1200,
        "Summarize the following book.\n\n{context}",
        "Summarize the book below.\n\n{context}\n\nSummary:",
    ),
    "longbook_choice_eng": (
        "infinitebench_choice", 40,
        "Read the book and answer the question.\n\n{context}\n\nQuestion: {question}\n\nOnly one of the "
        "following options is correct, tell me the answer using one single letter (A, B, C, or D). Don't "
        f"say anything else.\n{_OPTIONS}",
        f"Read the book and answer the question.\n\n{{context}}\n\nQuestion: {{question}}\n{_OPTIONS}\n\n"
        "The letter of the correct answer is",
    ),
    "longbook_qa_eng": (
        "qa_f1", 40,
        "Read the book below and answer a question.\n\n{context}\n\nQuestion: {question}\n\nBe very concise.",
        "Read the book and answer the question. Be very concise in your answer.\n\n{context}\n\n"
        "Question: {question}\nAnswer:",
    ),
    "longbook_qa_chn": (
        "char_f1_zh", 40,
        "请根据以下书籍回答我的问题。\n\n{context}\n\n问题：{question}\n请尽量简短地回答。",
        "阅读以下书籍然后回答问题。\n\n{context}\n\n问题：{question}\n答案：",
    ),
    "longdialogue_qa_eng": (
        "dialogue_name", 40,
        f"{_DIALOGUE}\n\nThe dialogue:\n\n---\n\n{{context}}\n\n---\n\nEnd of dialogue.\n\nWhich character "
        'is most likely "$$MASK$$"? Just say the name used by the scriptwriter (before the colon marks) '
        "of one single character and nothing else.",
        f"{_DIALOGUE}\n\n{{context}}\n\nThe name that has been replaced with $$MASK$$ is likely",
    ),
    "math_find": ("math_find", 3, "{prefix}\n\n{context}\n\n{input}", "{prefix}\n\n{context}\n\n{input}"),
    "code_run": (
        "code_run", 5,
        "Following is a set of Python functions. There is a function called named {func}.\n\n{context}\n\n"
        "Please give me the exact number of the return value of {func_call}. Be concise. Your response "
        "must end with the final returned value.",
        "There is a function called {func} in the following Python code.\n\n{context}\n\nPlease compute "
        "the exact value of {func_call}. The value of {func_call} is",
    ),
    "code_debug": (
        "infinitebench_code_debug", 5,
        "There is ONLY ONE function in the large project that is deliberately made to include an obvious "
        "error. Please find the function that contains the most obvious errors. I will give you four "
        "options to narrow your scope. You can inspect the options and think. Eventually, tell me the "
        f"answer using one single letter (A, B, C, or D).\n\n{{context}}\n\nWhich funtion has deliberate "
        f"error?\n{_OPTIONS}\n\nYou should first find the functions in the options. Repeat their content, "
        "inspect through code, and at last give me your answer for the function that has the deliberate "
        "and obvious error in A, B, C, or D.",
        "Following is a Python code where exactly one of the functions/methods has a deliberate error that "
        f"makes it crash.\n\n{{context}}\n\nOptions:\n{_OPTIONS}\n\nThe correct option is:",
    ),
}  # fmt: skip

_CHOICE = ("longbook_choice_eng", "code_debug")


def _fields(row: dict[str, Any], task: str) -> dict[str, Any]:
    text = str(row["input"])
    fields: dict[str, Any] = {"context": row["context"], "input": text, "question": text}
    options = list(row.get("options") or [])
    if task in _CHOICE:
        if len(options) != 4:
            raise BenchmarkDataError(f"InfiniteBench {task} row {row.get('id')!r}: expected 4 options")
        fields.update({f"OPTION_{letter}": o for letter, o in zip("ABCD", options)})
    if task == "math_find":
        found = re.findall(r"The .+ of", text)
        if not found:
            raise BenchmarkDataError(
                f"InfiniteBench math_find row {row.get('id')!r}: no 'The … of' in its input"
            )
        fields["prefix"] = f"What is {found[0].lower()[:-3]} in the following list?"
    if task == "code_run":
        calls = re.findall(r"func_[0-9]+\(\-?[0-9]+\)", text)
        if not calls:
            raise BenchmarkDataError(
                f"InfiniteBench code_run row {row.get('id')!r}: no func_N(x) call in its input"
            )
        fields.update(func_call=calls[0], func=calls[0].split("(")[0])
    return fields


def _answers(row: dict[str, Any], task: str) -> tuple[str, ...]:
    answer = row["answer"]
    answers = [str(a) for a in (answer if isinstance(answer, list) else [answer])]
    if task in _CHOICE and not (len(answers) == 2 and answers[1] in ("A", "B", "C", "D")):
        options = [str(o) for o in row["options"]]
        if answers[0] not in options:
            raise BenchmarkDataError(
                f"InfiniteBench {task} row {row.get('id')!r}: answer {answers[0]!r} is not an option"
            )
        answers = [answers[0], "ABCD"[options.index(answers[0])]]
    return tuple(answers)


def _items(row: dict[str, Any], sub: SubTask, plain: bool) -> list[Item]:
    template = sub.plain_template if plain else sub.template
    document, query = fill(template, _fields(row, sub.name))
    return [Item(document=document, query=query, answers=_answers(row, sub.name))]


INFINITEBENCH = Benchmark(
    name="infinitebench",
    title="InfiniteBench",
    source="the Hugging Face dataset xinrongzhang2022/InfiniteBench",
    files="one <task>.jsonl per task, e.g. passkey.jsonl, longbook_qa_eng.jsonl",
    columns=("context", "input", "answer"),
    truncation="middle",
    subtasks=subtasks(
        *(
            SubTask(name, metric, tokens, template=chat, plain_template=base, stems=(name,))
            for name, (metric, tokens, chat, base) in _TASKS.items()
        )
    ),
    items=_items,
)
