"""The standard benchmarks' scoring rules, each as its benchmark defines it.

Every metric takes the decoded prediction, the references and (for classification) the class
names, and returns a score in [0, 1]; the report shows 100 × the mean over samples, as the
benchmarks do. Where a sample has several references, the best one counts (LongBench,
InfiniteBench and ZeroSCROLLS all take the maximum).

The metric of each sub-task is named in its benchmark's module (:mod:`.longbench`,
:mod:`.ruler`, :mod:`.infinitebench`, :mod:`.loogle`, :mod:`.zeroscrolls`); the
names are the keys of :data:`METRICS`. ROUGE comes from the ``rouge`` package (LongBench,
InfiniteBench's Chinese tasks, LooGLE) or Google's ``rouge-score`` (InfiniteBench's
summaries, ZeroSCROLLS), code similarity from ``rapidfuzz``, Chinese word segmentation from
``jieba``; all are in the ``maskgraph[bench]`` extra and imported when first used.
"""

from __future__ import annotations

import ast
import json
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

from ...errors import MaskgraphError

#: Install hint of the optional packages.
INSTALL = "pip install 'maskgraph[bench]'"

Metric = Callable[[str, Sequence[str], Sequence[str]], float]

_ZH_PUNCTUATION = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."


def _require(module: str, package: str):
    """Import ``module`` of the optional ``package`` or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MaskgraphError(
            f"this benchmark metric needs the {package!r} package; install it with {INSTALL}"
        ) from exc


# ----- normalisation ------------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def normalize_zh_answer(text: str) -> str:
    """The Chinese variant: lower case, no ASCII or Chinese punctuation, no whitespace at all."""
    drop = set(string.punctuation + _ZH_PUNCTUATION)
    return "".join(ch for ch in text.lower() if ch not in drop and not ch.isspace())


def token_f1(prediction: Sequence[str], reference: Sequence[str]) -> float:
    """F1 of the multiset overlap of two token lists (0 when nothing is shared)."""
    same = sum((Counter(prediction) & Counter(reference)).values())
    if same == 0:
        return 0.0
    precision = same / len(prediction)
    recall = same / len(reference)
    return 2 * precision * recall / (precision + recall)


def _best(one: Callable[[str, str], float]) -> Metric:
    """A metric that scores every reference with ``one`` and keeps the best."""

    def metric(prediction: str, references: Sequence[str], classes: Sequence[str] = ()) -> float:
        if not references:
            raise MaskgraphError("a benchmark sample needs at least one reference answer")
        return max(float(one(prediction, r)) for r in references)

    return metric


def _first_line(metric: Metric) -> Metric:
    """LongBench's few-shot tasks: only the prediction's first non-empty line is scored."""

    def cut(prediction: str, references: Sequence[str], classes: Sequence[str] = ()) -> float:
        return metric(prediction.lstrip("\n").split("\n")[0], references, classes)

    return cut


# ----- F1, ROUGE, edit similarity ---------------------------------------------------------------
def qa_f1(prediction: str, reference: str) -> float:
    """Token F1 after :func:`normalize_answer` (LongBench, InfiniteBench, ZeroSCROLLS QA)."""
    return token_f1(normalize_answer(prediction).split(), normalize_answer(reference).split())


def _jieba_words(text: str) -> list[str]:
    jieba = _require("jieba", "jieba")
    return list(jieba.cut(text, cut_all=False))


def qa_f1_zh(prediction: str, reference: str) -> float:
    """LongBench's Chinese F1: jieba words, each normalised, empty ones dropped."""

    def words(text: str) -> list[str]:
        return [w for w in (normalize_zh_answer(t) for t in _jieba_words(text)) if w]

    return token_f1(words(prediction), words(reference))


def char_f1_zh(prediction: str, reference: str) -> float:
    """InfiniteBench's Chinese F1: one token per character after normalisation."""
    return token_f1(list(normalize_zh_answer(prediction)), list(normalize_zh_answer(reference)))


def _rouge_package(prediction: str, reference: str, key: str) -> float:
    """ROUGE-L of the ``rouge`` package (``key``: "f" or "r"); 0 where it refuses the pair
    (an empty or punctuation-only text), as LongBench counts it."""
    rouge = _require("rouge", "rouge")
    try:
        scores = rouge.Rouge().get_scores([prediction], [reference], avg=True)
    except (ValueError, RecursionError):
        return 0.0
    return float(scores["rouge-l"][key])


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F of the ``rouge`` package (LongBench's summaries and dureader)."""
    return _rouge_package(prediction, reference, "f")


def rouge_l_zh(prediction: str, reference: str) -> float:
    """LongBench's Chinese ROUGE-L: both texts as space-joined jieba words."""
    return rouge_l(" ".join(_jieba_words(prediction)), " ".join(_jieba_words(reference)))


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall of the ``rouge`` package (LooGLE's automatic ROUGE; an empty
    prediction is scored as the word "None", as LooGLE does)."""
    return _rouge_package(prediction or "None", reference, "r")


def _rouge_scorer(types: tuple[str, ...], stem: bool):
    scoring = _require("rouge_score.rouge_scorer", "rouge-score")
    return scoring.RougeScorer(list(types), use_stemmer=stem)


def rouge_lsum(prediction: str, reference: str) -> float:
    """ROUGE-Lsum F of ``rouge-score`` without stemming (InfiniteBench's book summaries;
    summary sentences are the lines)."""
    return float(_rouge_scorer(("rougeLsum",), False).score(reference, prediction)["rougeLsum"].fmeasure)


def rouge_geometric(prediction: str, reference: str) -> float:
    """ZeroSCROLLS' summary score: the geometric mean of ROUGE-1, ROUGE-2 and ROUGE-Lsum F of
    ``rouge-score`` with stemming (summary sentences are the lines)."""
    s = _rouge_scorer(("rouge1", "rouge2", "rougeLsum"), True).score(reference, prediction)
    values = [s["rouge1"].fmeasure, s["rouge2"].fmeasure, s["rougeLsum"].fmeasure]
    return math.prod(values) ** (1 / 3)


def code_similarity(prediction: str, reference: str) -> float:
    """LongBench's code score: the first line of the prediction with no ```, # or // in it,
    compared to the reference by fuzzy ratio (Levenshtein-based, whole percent) / 100."""
    fuzz = _require("rapidfuzz.fuzz", "rapidfuzz")
    line = next(
        (x for x in prediction.lstrip("\n").split("\n") if not any(m in x for m in ("`", "#", "//"))),
        "",
    )
    return round(fuzz.ratio(line, reference)) / 100


# ----- classification, retrieval, counting (LongBench) ------------------------------------------
def classification(prediction: str, references: Sequence[str], classes: Sequence[str] = ()) -> float:
    """LongBench's trec/lsht score: the class names found in the prediction, less those that
    are a proper part of the reference's name; 1/#found if the reference is among them.

    The dropping scan is LongBench's exactly: it steps over the name that follows each dropped
    one (so of two such names in a row, the second stays)."""
    if not classes:
        raise MaskgraphError("a classification sample needs its class names ('all_classes')")

    def one(reference: str) -> float:
        found = [c for c in classes if c in prediction]
        i = 0
        while i < len(found):
            if found[i] in reference and found[i] != reference:
                del found[i]
            i += 1
        return 1.0 / len(found) if reference in found else 0.0

    return max(one(r) for r in references)


def _share_of_numbers(prediction: str, wanted: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    return sum(n == wanted for n in numbers) / len(numbers) if numbers else 0.0


def count(prediction: str, reference: str) -> float:
    """LongBench's passage_count: the share of the numbers in the prediction equal to the reference."""
    return _share_of_numbers(prediction, str(reference))


def _retrieval(pattern: str) -> Callable[[str, str], float]:
    def one(prediction: str, reference: str) -> float:
        found = re.findall(pattern, reference)
        if not found:
            raise MaskgraphError(f"reference {reference!r} names no paragraph (pattern {pattern!r})")
        return _share_of_numbers(prediction, found[0])

    return one


# ----- multiple choice --------------------------------------------------------------------------
def longbench_v2_choice(prediction: str, reference: str) -> float:
    """LongBench v2: the letter in "The correct answer is (X)" (or "… is X"), '*' removed."""
    text = prediction.replace("*", "")
    match = re.search(r"The correct answer is \(([A-D])\)", text) or re.search(
        r"The correct answer is ([A-D])", text
    )
    return float(match is not None and match.group(1) == reference)


def infinitebench_choice(prediction: str, references: Sequence[str], classes: Sequence[str] = ()) -> float:
    """InfiniteBench's longbook_choice_eng: the references are the right option's text and its
    letter. A first character A–D is the answer; else the text after "answer is:", "answer:",
    "answer is" or "option is"; else the first word that is a substring of "ABCD"."""
    pred = prediction.strip()
    if not pred:
        return 0.0
    if pred[0] in "ABCD":
        return float(pred[0] in references)
    if pred in references:
        return 1.0
    for c in "\n\"'.,?!{}":
        pred = pred.replace(c, " ")
    pred = re.sub(" +", " ", pred)
    for prefix in ("answer is:", "answer:", "answer is", "option is"):
        at = pred.find(prefix)
        if at == -1:
            continue
        rest = pred[at + len(prefix) + 1 :]
        return float(bool(rest) and any(rest.startswith(r) for r in references))
    word = next((w for w in pred.split() if w in "ABCD"), None)  # a piece of "ABCD", as the benchmark checks
    return float(word is not None and word in references)


def infinitebench_code_debug(
    prediction: str, references: Sequence[str], classes: Sequence[str] = ()
) -> float:
    """InfiniteBench's code_debug: references are the function name and its option letter.
    "X." or "X:" at the start is an answer; else what follows "answer is:", "is:", "answer:" or
    "correct option is:" must start with the letter or the name."""
    name, letter = references[0], references[1]
    pred = prediction.strip()
    if pred[:2] in (f"{letter}.", f"{letter}:"):
        return 1.0
    for c in ("\n", "`", "'", '"', "-", "*", "Option", "option"):
        pred = pred.replace(c, " ")
    pred = re.sub(" +", " ", pred)
    for prefix in ("answer is:", "is:", "answer:", "correct option is:"):
        at = pred.find(prefix)
        if at == -1:
            continue
        rest = pred[at + len(prefix) + 1 :]
        return float(bool(rest) and (rest.startswith(letter) or rest.startswith(name)))
    return 0.0


# ----- InfiniteBench retrieval, math and code ---------------------------------------------------
def first_integer(prediction: str, reference: str) -> float:
    """InfiniteBench's passkey / number_string: the first run of digits equals the reference."""
    first = next((p for p in re.split(r"[^0-9]", prediction) if p), "")
    return float(first == reference)


def _words_without(prediction: str, chars: str) -> list[str]:
    for c in chars:
        prediction = prediction.replace(c, " ")
    return prediction.split()


def kv_retrieval(prediction: str, reference: str) -> float:
    """InfiniteBench's kv_retrieval: the value is one of the prediction's words (split at
    whitespace and at ``\\n : " ' . , ? ! { }``)."""
    return float(reference in _words_without(prediction, "\n:\"'.,?!{}"))


def dialogue_name(prediction: str, reference: str) -> float:
    """InfiniteBench's longdialogue_qa_eng: the name is one of the prediction's upper-cased words."""
    return float(reference in [w.upper() for w in _words_without(prediction.strip(), "\n:\"'.,?!{}")])


def math_find(prediction: str, reference: str) -> float:
    """InfiniteBench's math_find: the first number in the prediction equals the reference
    (compared as an integer when the reference is one, else as a float)."""
    found = re.search(r"\d+\.\d+|\d+", prediction)
    if found is None:
        return 0.0
    if re.fullmatch(r"-?\d+", reference.strip()):
        return float(int(float(found.group(0))) == int(reference))
    return float(float(found.group(0)) == float(reference))


def code_run(prediction: str, reference: str) -> float:
    """InfiniteBench's code_run: the last word of the prediction (split at whitespace and at
    ``\\n . ` ' " :``) is the reference integer."""
    words = _words_without(prediction.strip(), "\n.`'\":")
    if not words:
        return 0.0
    try:
        return float(int(words[-1]) == int(reference))
    except ValueError:
        return 0.0


# ----- LooGLE cloze, ZeroSCROLLS exact match ----------------------------------------------------
def _mapping(text: str) -> dict | None:
    """A dict written as a Python or JSON literal, or None."""
    for parse in (ast.literal_eval, json.loads):
        try:
            value = parse(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def cloze_exact(prediction: str, reference: str) -> float:
    """LooGLE's cloze exact match: the reference is a JSON object mask -> entity; the share of
    masks whose entity the prediction (a dict literal) gives exactly; 0 if it is no dict."""
    wanted = json.loads(reference)
    got = _mapping(prediction)
    if got is None or not wanted:
        return 0.0
    return sum(k in got and got[k] == v for k, v in wanted.items()) / len(wanted)


def exact_match(prediction: str, reference: str) -> float:
    """1 if the normalised prediction equals the normalised reference (ZeroSCROLLS' QuALITY)."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def string_match_all(prediction: str, references: Sequence[str], classes: Sequence[str] = ()) -> float:
    """RULER: the share of references found (case-insensitively) in the prediction."""
    text = prediction.lower()
    return sum(r.lower() in text for r in references) / len(references)


def string_match_part(prediction: str, references: Sequence[str], classes: Sequence[str] = ()) -> float:
    """RULER's QA: 1 if any reference is found (case-insensitively) in the prediction."""
    text = prediction.lower()
    return float(any(r.lower() in text for r in references))


#: Every benchmark metric by name (the names the sub-task tables use).
METRICS: dict[str, Metric] = {
    "qa_f1": _best(qa_f1),
    "qa_f1_zh": _best(qa_f1_zh),
    "char_f1_zh": _best(char_f1_zh),
    "rouge_l": _best(rouge_l),
    "rouge_l_zh": _best(rouge_l_zh),
    "rouge_l_recall": _best(rouge_l_recall),
    "rouge_lsum": _best(rouge_lsum),
    "rouge_geometric": _best(rouge_geometric),
    "code_similarity": _best(code_similarity),
    "classification": classification,
    "count": _best(count),
    "retrieval_en": _best(_retrieval(r"Paragraph (\d+)")),
    "retrieval_zh": _best(_retrieval(r"段落(\d+)")),
    "longbench_v2_choice": _best(longbench_v2_choice),
    "infinitebench_choice": infinitebench_choice,
    "infinitebench_code_debug": infinitebench_code_debug,
    "first_integer": _best(first_integer),
    "kv_retrieval": _best(kv_retrieval),
    "dialogue_name": _best(dialogue_name),
    "math_find": _best(math_find),
    "code_run": _best(code_run),
    "cloze_exact": _best(cloze_exact),
    "exact_match": _best(exact_match),
    "string_match_all": string_match_all,
    "string_match_part": string_match_part,
}
for _name in ("classification", "qa_f1", "rouge_l"):
    METRICS[f"{_name}@first_line"] = _first_line(METRICS[_name])


def bench_score(
    prediction: str, references: Sequence[str], metric: str, classes: Sequence[str] = ()
) -> float:
    """Score ``prediction`` by the benchmark metric named ``metric`` (a key of :data:`METRICS`)."""
    if metric not in METRICS:
        raise MaskgraphError(f"unknown benchmark metric {metric!r}; valid: {', '.join(METRICS)}")
    if not references:
        raise MaskgraphError(f"metric {metric!r} needs at least one reference answer")
    return METRICS[metric](prediction, references, classes)
