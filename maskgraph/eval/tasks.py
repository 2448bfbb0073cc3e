"""RULER-style synthetic tasks, generated locally and reproducibly from a seed.

Each generator builds one :class:`Sample` whose prompt (context + question) is as long as
possible without exceeding ``length`` tokens of the given tokenizer. The context is what the
default protocol prefills densely; the question (ending with RULER's answer prefix) and the
generated answer go through the graph.

Tasks (after Hsieh et al. 2024, RULER), all scored with ``string_match_all``:

- ``niah_single_{number,word,uuid}``: one needle "One of the special magic {type} for {key}
  is: {value}." in a haystack of repeated filler sentences;
- ``niah_multikey``: four needles with different keys; the question asks for one;
- ``niah_multivalue``: four needles with the same key; all four values are wanted;
- ``niah_multiquery``: four needles with different keys; the question asks for two;
- ``vt`` (variable tracking): one chain ``VAR A = 12345``, ``VAR B = VAR A``, … of four hops
  hidden in the filler; every name in the chain is wanted;
- ``cwe`` (common-word extraction, aggregation): a numbered word list where ten words occur
  ``CWE_FREQ_COMMON`` times and the others ``CWE_FREQ_RARE`` times; the ten common words are
  wanted;
- ``fwe`` (frequent-word extraction, aggregation): coded pseudo-words drawn with Zipf
  (α = 2) counts; the three most frequent are wanted.

Sizes are fitted by bisection on the number of filler units (sentences, list entries), so a
sample's token count is at most ``length`` and within one unit of it.
"""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import MaskgraphError
from .words import ADJECTIVES, ALL_WORDS, NOUNS

RETRIEVAL = "retrieval"
AGGREGATION = "aggregation"

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
CWE_NUM_COMMON = 10
CWE_FREQ_COMMON = 12
CWE_FREQ_RARE = 2
FWE_ALPHA = 2.0
FWE_VOCAB = 60
VT_HOPS = 4
NIAH_NEEDLES = 4


class Tokenizer(Protocol):
    """What the generators need of a tokenizer (HF tokenizers qualify)."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids, skip_special_tokens: bool = ...) -> str: ...


@dataclass(frozen=True)
class Sample:
    """One synthetic example.

    ``context`` + ``question`` is the prompt; ``answers`` are the reference strings;
    ``needles`` lists ``(char offset in context, inserted text)`` for every planted fact;
    ``classes`` are the class names of a classification sample (a benchmark's; see
    :mod:`maskgraph.eval.bench`).
    """

    task: str
    index: int
    length: int
    context: str
    question: str
    answers: tuple[str, ...]
    metric: str
    kind: str
    max_new_tokens: int
    needles: tuple[tuple[int, str], ...] = field(default=())
    n_tokens: int = 0
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Template:
    """Chat wrapping: ``prefix`` before the user text, ``suffix`` between it and the answer."""

    prefix: str = ""
    suffix: str = "\n"

    @staticmethod
    def chat(tokenizer) -> Template:
        """The tokenizer's chat template around one user turn (generation prompt added)."""
        apply = getattr(tokenizer, "apply_chat_template", None)
        if apply is None or not getattr(tokenizer, "chat_template", None):
            raise MaskgraphError("the tokenizer has no chat template; use template='plain'")
        marker = "\u241f"
        text = apply([{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True)
        prefix, _, suffix = text.partition(marker)
        return Template(prefix=prefix, suffix=suffix)


# ----- building blocks --------------------------------------------------------------------------
def _rng(seed: int, task: str, length: int, index: int) -> random.Random:
    return random.Random(f"maskgraph-eval:{seed}:{task}:{length}:{index}")


def _key(rng: random.Random, taken: set[str]) -> str:
    while True:
        k = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
        if k not in taken:
            taken.add(k)
            return k


def _value(rng: random.Random, kind: str, taken: set[str]) -> str:
    while True:
        if kind == "number":
            v = str(rng.randint(1_000_000, 9_999_999))
        elif kind == "word":
            v = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
        elif kind == "uuid":
            v = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        else:
            raise MaskgraphError(f"unknown needle value type {kind!r}")
        if v not in taken:
            taken.add(v)
            return v


def _plant(units: list[str], facts: list[str], rng: random.Random) -> tuple[str, list[tuple[int, str]]]:
    """Insert ``facts`` between filler ``units`` at random depths; returns text and offsets."""
    slots = sorted(rng.randint(0, len(units)) for _ in facts)
    pieces: list[str] = []
    needles: list[tuple[int, str]] = []
    offset = 0
    unit_i = 0
    for slot, fact in zip(slots, facts):
        while unit_i < slot:
            pieces.append(units[unit_i])
            offset += len(units[unit_i]) + 1
            unit_i += 1
        needles.append((offset, fact))
        pieces.append(fact)
        offset += len(fact) + 1
    pieces.extend(units[unit_i:])
    return " ".join(pieces), needles


def _shift(needles: list[tuple[int, str]], by: int) -> tuple[tuple[int, str], ...]:
    return tuple((o + by, t) for o, t in needles)


# ----- needle in a haystack ---------------------------------------------------------------------
_TYPE_NAMES = {"number": "numbers", "word": "words", "uuid": "uuids"}


def _niah(variant: str, value_type: str):
    def build(rng: random.Random, n: int, tpl: Template) -> dict:
        keys: set[str] = set()
        values: set[str] = set()
        kind = _TYPE_NAMES[value_type]
        if variant == "single":
            pairs = [(_key(rng, keys), _value(rng, value_type, values))]
            asked = [pairs[0][0]]
        elif variant == "multivalue":
            k = _key(rng, keys)
            pairs = [(k, _value(rng, value_type, values)) for _ in range(NIAH_NEEDLES)]
            asked = [k]
        else:
            pairs = [(_key(rng, keys), _value(rng, value_type, values)) for _ in range(NIAH_NEEDLES)]
            asked = [pairs[0][0]] if variant == "multikey" else [pairs[0][0], pairs[1][0]]
        facts = [f"One of the special magic {kind} for {k} is: {v}." for k, v in pairs]
        order = list(range(len(facts)))
        rng.shuffle(order)
        haystack, needles = _plant([FILLER] * n, [facts[i] for i in order], rng)
        head = (
            f"{tpl.prefix}Some special magic {kind} are hidden within the following text. Make sure "
            f"to memorize it. I will quiz you about the {kind} afterwards.\n"
        )
        query = " and ".join(asked)
        question = (
            f"\nWhat are all the special magic {kind} for {query} mentioned in the provided text?"
            f"{tpl.suffix}The special magic {kind} for {query} mentioned in the provided text are"
        )
        answers = [v for k, v in pairs if k in asked]
        return dict(
            context=head + haystack,
            question=question,
            answers=answers,
            needles=_shift(needles, len(head)),
        )

    return build


# ----- variable tracking ------------------------------------------------------------------------
def _var_name(rng: random.Random, taken: set[str]) -> str:
    while True:
        name = "".join(rng.choice(string.ascii_uppercase) for _ in range(5))
        if name not in taken:
            taken.add(name)
            return name


def _vt(rng: random.Random, n: int, tpl: Template) -> dict:
    names: set[str] = set()
    chain = [_var_name(rng, names) for _ in range(VT_HOPS + 1)]
    value = str(rng.randint(10_000, 99_999))
    facts = [f"VAR {chain[0]} = {value}."] + [
        f"VAR {chain[i]} = VAR {chain[i - 1]}." for i in range(1, len(chain))
    ]
    # the chain must stay in order: plant at sorted depths (``_plant`` sorts its slots)
    haystack, needles = _plant([FILLER] * n, facts, rng)
    head = (
        f"{tpl.prefix}Memorize and track the chain(s) of variable assignment hidden in the "
        "following text.\n\n"
    )
    question = (
        f"\nQuestion: Find all variables that are assigned the value {value} in the text above."
        f"{tpl.suffix}Answer: According to the chain(s) of variable assignment in the text above, "
        f"{len(chain)} variables are assigned the value {value}, they are:"
    )
    return dict(context=head + haystack, question=question, answers=chain, needles=_shift(needles, len(head)))


# ----- aggregation ------------------------------------------------------------------------------
def _cwe(rng: random.Random, n: int, tpl: Template) -> dict:
    pool = list(ALL_WORDS)
    rng.shuffle(pool)
    common = pool[:CWE_NUM_COMMON]
    rare = pool[CWE_NUM_COMMON : CWE_NUM_COMMON + n]
    words = common * CWE_FREQ_COMMON + rare * CWE_FREQ_RARE
    rng.shuffle(words)
    listing = " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))
    head = f"{tpl.prefix}Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n"
    question = (
        f"\nQuestion: What are the {CWE_NUM_COMMON} most common words in the above list?"
        f"{tpl.suffix}Answer: The top {CWE_NUM_COMMON} words that appear most often in the list are:"
    )
    return dict(context=head + listing, question=question, answers=common, needles=())


def _pseudo_word(rng: random.Random, taken: set[str]) -> str:
    while True:
        w = "".join(rng.choice("bcdfghjklmnprstvz") + rng.choice("aeiou") for _ in range(2))
        if w not in taken:
            taken.add(w)
            return w


def _fwe_counts(total: int) -> list[int]:
    """Zipf(α) counts over FWE_VOCAB ranks summing to about ``total``, strictly decreasing
    over the first four ranks (so the top three are unambiguous)."""
    weights = [(r + 1) ** -FWE_ALPHA for r in range(FWE_VOCAB)]
    norm = sum(weights)
    counts = [max(1, round(total * w / norm)) for w in weights]
    for r in range(3, -1, -1):
        counts[r] = max(counts[r], counts[r + 1] + 1)
    return counts


def _fwe(rng: random.Random, n: int, tpl: Template) -> dict:
    taken: set[str] = set()
    vocab = [_pseudo_word(rng, taken) for _ in range(FWE_VOCAB)]
    counts = _fwe_counts(n)
    words = [w for w, c in zip(vocab, counts) for _ in range(c)]
    rng.shuffle(words)
    head = (
        f"{tpl.prefix}Read the following coded text and track the frequency of each coded word. "
        "Find the three most frequently appeared coded words.\n"
    )
    question = (
        "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the "
        f"three most frequently appeared words in the above coded text?{tpl.suffix}Answer: According "
        "to the coded text above, the three most frequently appeared words are:"
    )
    return dict(context=head + " ".join(words) + " ....", question=question, answers=vocab[:3], needles=())


# ----- registry -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str
    max_new_tokens: int
    build: Callable[[random.Random, int, Template], dict]
    max_units: int = 1 << 16


TASKS: dict[str, TaskSpec] = {
    "niah_single_number": TaskSpec("niah_single_number", RETRIEVAL, 12, _niah("single", "number")),
    "niah_single_word": TaskSpec("niah_single_word", RETRIEVAL, 16, _niah("single", "word")),
    "niah_single_uuid": TaskSpec("niah_single_uuid", RETRIEVAL, 32, _niah("single", "uuid")),
    "niah_multikey": TaskSpec("niah_multikey", RETRIEVAL, 12, _niah("multikey", "number")),
    "niah_multivalue": TaskSpec("niah_multivalue", RETRIEVAL, 48, _niah("multivalue", "number")),
    "niah_multiquery": TaskSpec("niah_multiquery", RETRIEVAL, 32, _niah("multiquery", "number")),
    "vt": TaskSpec("vt", RETRIEVAL, 32, _vt),
    "cwe": TaskSpec("cwe", AGGREGATION, 64, _cwe, max_units=len(ALL_WORDS) - CWE_NUM_COMMON),
    "fwe": TaskSpec("fwe", AGGREGATION, 16, _fwe),
}


def task_names() -> list[str]:
    return list(TASKS)


def generate(
    task: str,
    tokenizer: Tokenizer,
    length: int,
    seed: int = 0,
    index: int = 0,
    template: Template | None = None,
) -> Sample:
    """Sample ``index`` of ``task`` whose prompt holds at most ``length`` tokens.

    Deterministic in (task, length, seed, index) and the tokenizer.
    """
    if task not in TASKS:
        raise MaskgraphError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    spec = TASKS[task]
    tpl = template or Template()

    def make(n: int) -> tuple[dict, int]:
        parts = spec.build(_rng(seed, task, length, index), n, tpl)
        return parts, len(tokenizer.encode(parts["context"] + parts["question"], add_special_tokens=False))

    n = _fit(make, length, spec.max_units, task)
    parts, n_tokens = make(n)
    return Sample(
        task=task,
        index=index,
        length=length,
        context=parts["context"],
        question=parts["question"],
        answers=tuple(parts["answers"]),
        metric="all",
        kind=spec.kind,
        max_new_tokens=spec.max_new_tokens,
        needles=tuple(parts["needles"]),
        n_tokens=n_tokens,
    )


def _fit(make: Callable[[int], tuple[dict, int]], length: int, max_units: int, task: str) -> int:
    """The largest unit count whose prompt fits in ``length`` tokens (bisection)."""
    if make(1)[1] > length:
        raise MaskgraphError(f"task {task!r}: length {length} is too short for even one filler unit")
    lo, hi = 1, 2
    while hi <= max_units and make(hi)[1] <= length:
        lo, hi = hi, hi * 2
    hi = min(hi, max_units + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if make(mid)[1] <= length:
            lo = mid
        else:
            hi = mid
    return lo
