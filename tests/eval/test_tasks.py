"""Task generators (deterministic, needles where they say, length fitted) and RULER scoring."""

from __future__ import annotations

import collections
import re

import pytest

from maskgraph.errors import MaskgraphError
from maskgraph.eval.scoring import score, string_match_all, string_match_part
from maskgraph.eval.tasks import TASKS, Template, generate


class WordTokenizer:
    """One token per whitespace-separated piece (enough to fit lengths in tests)."""

    def encode(self, text, add_special_tokens=False):
        return [hash(w) % 1000 for w in text.split()]

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


TOK = WordTokenizer()


@pytest.mark.parametrize("task", list(TASKS))
def test_deterministic_per_seed_and_fitted(task):
    a = generate(task, TOK, 600, seed=3, index=1)
    b = generate(task, TOK, 600, seed=3, index=1)
    c = generate(task, TOK, 600, seed=4, index=1)
    d = generate(task, TOK, 600, seed=3, index=2)
    assert a == b
    assert (a.context, a.answers) != (c.context, c.answers)
    assert (a.context, a.answers) != (d.context, d.answers)
    n = len(TOK.encode(a.context + a.question))
    assert n == a.n_tokens <= 600
    assert n > 600 * 0.8  # fitted close to the asked length (one filler unit is small)


@pytest.mark.parametrize("task", [t for t in TASKS if t.startswith("niah") or t == "vt"])
def test_needles_are_where_the_generator_says(task):
    s = generate(task, TOK, 800, seed=0, index=0)
    assert s.needles
    for offset, text in s.needles:
        assert s.context[offset : offset + len(text)] == text
    # every answer is stated by a needle and nowhere else in the filler
    for ans in s.answers:
        assert any(ans in t for _, t in s.needles)
        assert s.context.count(ans) == sum(t.count(ans) for _, t in s.needles)


def test_niah_variants_shape():
    single = generate("niah_single_number", TOK, 500, seed=1)
    assert len(single.answers) == 1 and re.fullmatch(r"\d{7}", single.answers[0])
    assert len(generate("niah_single_uuid", TOK, 500, seed=1).answers[0]) == 36
    mv = generate("niah_multivalue", TOK, 500, seed=1)
    assert len(mv.answers) == 4 and len(mv.needles) == 4
    mk = generate("niah_multikey", TOK, 500, seed=1)
    assert len(mk.answers) == 1 and len(mk.needles) == 4
    mq = generate("niah_multiquery", TOK, 500, seed=1)
    assert len(mq.answers) == 2 and " and " in mq.question
    # the asked key(s) appear in the question and in the needle that holds the answer
    for ans in mq.answers:
        needle = next(t for _, t in mq.needles if ans in t)
        key = re.search(r"for (\S+) is:", needle).group(1)
        assert key in mq.question


def test_vt_chain_in_order():
    s = generate("vt", TOK, 700, seed=2)
    assert len(s.answers) == 5
    offsets = [o for o, _ in s.needles]
    assert offsets == sorted(offsets)
    first = s.needles[0][1]
    value = re.search(r"= (\d+)\.", first).group(1)
    assert f"value {value}" in s.question
    for (_, t), prev, name in zip(s.needles[1:], s.answers, s.answers[1:]):
        assert t == f"VAR {name} = VAR {prev}."


def test_cwe_answers_are_the_most_common_words():
    s = generate("cwe", TOK, 900, seed=5)
    words = re.findall(r"\d+\. (\w+)", s.context)
    counts = collections.Counter(words)
    top = {w for w, _ in counts.most_common(len(s.answers))}
    assert top == set(s.answers)
    assert min(counts[w] for w in s.answers) > max(c for w, c in counts.items() if w not in s.answers)


def test_fwe_answers_are_the_three_most_frequent():
    s = generate("fwe", TOK, 900, seed=6)
    counts = collections.Counter(s.context.split("\n", 1)[1].split()[:-1])
    ranked = [w for w, _ in counts.most_common()]
    assert ranked[:3] == list(s.answers)
    assert counts[ranked[2]] > counts[ranked[3]]


def test_template_wraps_prompt():
    tpl = Template(prefix="<user>", suffix="</user><bot>")
    s = generate("niah_single_word", TOK, 300, template=tpl)
    assert s.context.startswith("<user>") and "</user><bot>The special magic" in s.question


def test_too_short_and_unknown():
    with pytest.raises(MaskgraphError):
        generate("niah_single_number", TOK, 5)
    with pytest.raises(MaskgraphError):
        generate("nope", TOK, 500)


def test_string_match_all_by_hand():
    assert string_match_all("The numbers are 123 and 456.", ["123", "456"]) == 1.0
    assert string_match_all("The numbers are 123.", ["123", "456"]) == 0.5
    assert string_match_all("nothing", ["123", "456"]) == 0.0
    assert string_match_all("ABC-def here", ["abc-DEF"]) == 1.0  # case-insensitive
    assert string_match_all("12345", ["1234"]) == 1.0  # substring, as RULER does


def test_string_match_part_by_hand():
    assert string_match_part("Paris is the capital", ["paris", "lyon"]) == 1.0
    assert string_match_part("Rome", ["paris", "lyon"]) == 0.0
    assert score("a b", ["a", "c"], "all") == 0.5 and score("a b", ["a", "c"], "part") == 1.0
    with pytest.raises(MaskgraphError):
        score("a", ["a"], "exact")
    with pytest.raises(MaskgraphError):
        string_match_all("a", [])
