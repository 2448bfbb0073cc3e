"""LongBench (v1, with LongBench-E) and LongBench v2: prompts, answer lengths and metrics per
sub-task, as the benchmark's repository (THUDM/LongBench) defines them.

v1 rows: ``context``, ``input``, ``answers`` (list), ``all_classes`` (list or null), ``length``,
``dataset``, ``language``, ``_id``. v2 rows: ``_id``, ``domain``, ``sub_domain``, ``difficulty``,
``length``, ``question``, ``choice_A`` … ``choice_D``, ``answer`` (a letter), ``context``.
"""

from __future__ import annotations

from typing import Any

from .prompt import Benchmark, Item, SubTask, fill, subtasks

_PASSAGES = (
    "Answer the question based on the given passages. Only give me the answer and do not output any "
    "other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the "
    "given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\n"
    "Answer:"
)
_QASPER_RULES = (
    "as concisely as you can, using a single phrase or sentence if possible. If the question cannot be "
    'answered based on the information in the article, write "unanswerable". If the question is a '
    'yes/no question, answer "yes", "no", or "unanswerable". Do not provide any explanation.'
)
_NARRATIVE_RULES = (
    "asconcisely as you can, using a single phrase if possible. Do not provide any explanation."
)

#: (name, metric, max new tokens, template, wrapped in the chat template)
_V1: tuple[tuple[str, str, int, str, bool], ...] = (
    ("narrativeqa", "qa_f1", 128,
     "You are given a story, which can be either a novel or a movie script, and a question. Answer the "
     f"question {_NARRATIVE_RULES}\n\nStory: {{context}}\n\nNow, answer the question based on the story "
     f"{_NARRATIVE_RULES}\n\nQuestion: {{input}}\n\nAnswer:", True),
    ("qasper", "qa_f1", 128,
     f"You are given a scientific article and a question. Answer the question {_QASPER_RULES}\n\n"
     f"Article: {{context}}\n\n Answer the question based on the above article {_QASPER_RULES}\n\n"
     "Question: {input}\n\nAnswer:", True),
    ("multifieldqa_en", "qa_f1", 64,
     "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question "
     "based on the above text, only give me the answer and do not output any other words.\n\n"
     "Question: {input}\nAnswer:", True),
    ("multifieldqa_zh", "qa_f1_zh", 64,
     "阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，不要输出任何其他字词。\n\n"
     "问题：{input}\n回答：", True),
    ("hotpotqa", "qa_f1", 32, _PASSAGES, True),
    ("2wikimqa", "qa_f1", 32, _PASSAGES, True),
    ("musique", "qa_f1", 32, _PASSAGES, True),
    ("dureader", "rouge_l_zh", 128,
     "请基于给定的文章回答下述问题。\n\n文章：{context}\n\n请基于上述文章回答下面的问题。\n\n问题：{input}\n回答：", True),
    ("gov_report", "rouge_l", 512,
     "You are given a report by a government agency. Write a one-page summary of the report.\n\n"
     "Report:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:", True),
    ("qmsum", "rouge_l", 512,
     "You are given a meeting transcript and a query containing a question or instruction. Answer the "
     "query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the "
     "above meeting transcript in one or more sentences.\n\nQuery: {input}\nAnswer:", True),
    ("multi_news", "rouge_l", 512,
     "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}"
     "\n\nNow, write a one-page summary of all the news.\n\nSummary:", True),
    ("vcsum", "rouge_l_zh", 512,
     "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}\n\n会议总结：", True),
    ("trec", "classification@first_line", 64,
     "Please determine the type of the question below. Here are some examples of questions.\n\n"
     "{context}\n{input}", False),
    ("triviaqa", "qa_f1@first_line", 32,
     "Answer the question based on the given passage. Only give me the answer and do not output any "
     "other words. The following are some examples.\n\n{context}\n\n{input}", False),
    ("samsum", "rouge_l@first_line", 128,
     "Summarize the dialogue into a few short sentences. The following are some examples.\n\n"
     "{context}\n\n{input}", False),
    ("lsht", "classification@first_line", 64, "请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}", False),
    ("passage_count", "count", 32,
     "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please "
     "carefully read these paragraphs and determine how many unique paragraphs there are after removing "
     "duplicates. In other words, how many non-repeating paragraphs are there in total?\n\n{context}\n\n"
     "Please enter the final count of unique paragraphs after removing duplicates. The output format "
     "should only contain the number, such as 1, 2, 3, and so on.\n\nThe final answer is: ", True),
    ("passage_retrieval_en", "retrieval_en", 32,
     "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph "
     "the abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the "
     'number of the paragraph that the abstract is from. The answer format must be like "Paragraph 1", '
     '"Paragraph 2", etc.\n\nThe answer is: ', True),
    ("passage_retrieval_zh", "retrieval_zh", 32,
     "以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n下面是一个摘要\n\n{input}\n\n"
     '请输入摘要所属段落的编号。答案格式必须是"段落1"，"段落2"等格式\n\n答案是：', True),
    ("lcc", "code_similarity", 64, "Please complete the code given below. \n{context}Next line of code:\n", False),
    ("repobench-p", "code_similarity", 64,
     "Please complete the code given below. \n{context}{input}Next line of code:\n", False),
)  # fmt: skip

#: The sub-tasks of LongBench-E (the same prompts on length-balanced samples, files ``<name>_e``).
_E = (
    "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "gov_report", "multi_news", "trec", "triviaqa",
    "samsum", "passage_count", "passage_retrieval_en", "lcc", "repobench-p",
)  # fmt: skip


def _v1_specs() -> list[SubTask]:
    specs = [SubTask(n, m, k, template=t, stems=(n,), chat=c) for n, m, k, t, c in _V1]
    by_name = {s.name: s for s in specs}
    for name in _E:
        s = by_name[name]
        specs.append(
            SubTask(f"{name}_e", s.metric, s.max_new_tokens, s.template, stems=(f"{name}_e",), chat=s.chat)
        )
    return specs


def _v1_items(row: dict[str, Any], sub: SubTask, plain: bool) -> list[Item]:
    document, query = fill(sub.template, {"context": row["context"], "input": row["input"]})
    return [
        Item(
            document=document,
            query=query,
            answers=tuple(str(a) for a in row["answers"]),
            classes=tuple(row.get("all_classes") or ()),
        )
    ]


LONGBENCH = Benchmark(
    name="longbench",
    title="LongBench",
    source="the Hugging Face dataset THUDM/LongBench (its data.zip holds data/<sub-task>.jsonl)",
    files="one <sub-task>.jsonl per sub-task, e.g. qasper.jsonl; LongBench-E: qasper_e.jsonl",
    columns=("context", "input", "answers", "all_classes"),
    truncation="middle",
    subtasks=subtasks(*_v1_specs()),
    items=_v1_items,
)

# ----- v2 -------------------------------------------------------------------------------------------
V2_TEMPLATE = (
    "Please read the following text and answer the question below.\n\n<text>\n{context}\n</text>\n\n"
    "What is the correct answer to this question: {question}\nChoices:\n(A) {choice_A}\n(B) {choice_B}\n"
    '(C) {choice_C}\n(D) {choice_D}\n\nFormat your response as follows: "The correct answer is (insert '
    'answer here)".'
)
#: sub-task -> the ``domain`` value of its rows ("" = every row).
_V2_DOMAINS = {
    "all": "",
    "single_doc_qa": "Single-Document QA",
    "multi_doc_qa": "Multi-Document QA",
    "long_icl": "Long In-context Learning",
    "dialogue_history": "Long-dialogue History Understanding",
    "code_repo": "Code Repository Understanding",
    "structured_data": "Long Structured Data Understanding",
}
_V2_FIELDS = ("question", "choice_A", "choice_B", "choice_C", "choice_D")


def _v2_items(row: dict[str, Any], sub: SubTask, plain: bool) -> list[Item]:
    if sub.select and row["domain"] != sub.select:
        return []
    fields = {k: str(row[k]).strip() for k in _V2_FIELDS}
    document, query = fill(sub.template, {"context": str(row["context"]).strip(), **fields})
    return [Item(document=document, query=query, answers=(str(row["answer"]).strip(),))]


LONGBENCH_V2 = Benchmark(
    name="longbench_v2",
    title="LongBench v2",
    source="the Hugging Face dataset THUDM/LongBench-v2 (data.json)",
    files="data.json (one JSON list of all 503 questions); sub-tasks select rows by 'domain'",
    columns=(
        "_id",
        "domain",
        "question",
        "choice_A",
        "choice_B",
        "choice_C",
        "choice_D",
        "answer",
        "context",
    ),
    truncation="middle",
    subtasks=subtasks(
        *(
            SubTask(
                name, "longbench_v2_choice", 128, V2_TEMPLATE, stems=("data", "longbench_v2"), select=domain
            )
            for name, domain in _V2_DOMAINS.items()
        )
    ),
    items=_v2_items,
    splits=("train", "test", "validation"),
)
