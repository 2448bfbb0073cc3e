"""The standard benchmarks' metrics against values computed by hand."""

from __future__ import annotations

import pytest

from maskgraph.errors import MaskgraphError
from maskgraph.eval.bench.metrics import METRICS, bench_score, normalize_answer
from maskgraph.eval.scoring import score


def m(name, prediction, references, classes=()):
    return METRICS[name](prediction, references, classes)


def test_normalisation_lowers_and_drops_punctuation_articles_and_spaces():
    assert normalize_answer("  The  Forty-Ships, an ARMADA!") == "fortyships armada"


def test_qa_f1_with_normalisation():
    assert m("qa_f1", "The Forty ships!", ["forty ships"]) == 1.0
    # pred {forty, big, ships, sailed} vs ref {forty, ships}: P = 2/4, R = 2/2, F1 = 2/3
    assert m("qa_f1", "forty big ships sailed", ["the forty ships"]) == pytest.approx(2 / 3)
    # repeated tokens count as a multiset: pred {ships, ships} vs ref {ships}: P = 1/2, R = 1
    assert m("qa_f1", "ships ships", ["ships"]) == pytest.approx(2 / 3)
    assert m("qa_f1", "nothing shared", ["forty ships"]) == 0.0
    # several references: the best one counts
    assert m("qa_f1", "40", ["forty ships", "40"]) == 1.0


def test_chinese_character_f1():
    # chars {蓝, 色, 的} vs {蓝, 色} after dropping "。": P = 2/3, R = 1, F1 = 0.8
    assert m("char_f1_zh", "蓝色的。", ["蓝色"]) == pytest.approx(0.8)


def test_rouge_l_on_a_known_pair():
    # LCS of "a quick brown fox jumps" / "the quick brown dog jumps" = quick brown jumps:
    # P = R = 3/5, F = 0.6
    assert m("rouge_l", "a quick brown fox jumps", ["the quick brown dog jumps"]) == pytest.approx(
        0.6, abs=1e-6
    )
    # LooGLE reports the recall: LCS 2 of the reference's 5 words
    assert m("rouge_l_recall", "quick brown", ["the quick brown dog jumps"]) == pytest.approx(0.4, abs=1e-6)
    # an empty prediction scores 0 (LongBench), not an error
    assert m("rouge_l", "", ["the quick brown dog"]) == 0.0


def test_rouge_geometric_mean_of_zeroscrolls():
    # R1: P = 1, R = 3/4 -> 6/7; R2: bigrams 2 of 2 and of 3 -> 0.8; RLsum: LCS 3 -> 6/7
    got = m("rouge_geometric", "the cat sat", ["the cat sat down"])
    assert got == pytest.approx((6 / 7 * 0.8 * 6 / 7) ** (1 / 3))
    assert m("rouge_geometric", "cats", ["cats sit"]) == 0.0  # no shared bigram


def test_rouge_lsum_of_infinitebench():
    # LCS 3 of 3 and 4 words: F = 6/7
    assert m("rouge_lsum", "the cat sat", ["the cat sat down"]) == pytest.approx(6 / 7)


def test_code_edit_similarity():
    # the first line without ```, # or // is compared; "abcd" vs "abed": LCS 3, indel distance
    # 4 + 4 - 2*3 = 2, similarity 1 - 2/8 = 0.75
    assert m("code_similarity", "```python\n# a comment\nabcd\nmore", ["abed"]) == pytest.approx(0.75)
    assert m("code_similarity", "\n    return total\n", ["    return total"]) == 1.0


def test_exact_match():
    assert m("exact_match", "The Blue.", ["blue"]) == 1.0
    assert m("exact_match", "blue notebook", ["blue"]) == 0.0


def test_classification_and_the_first_line_rule():
    classes = ["Individual", "Distance", "City", "Country"]
    # two class names found, the right one among them: 1/2
    assert m("classification", "City or Country", ["City"], classes) == 0.5
    assert m("classification", "Distance", ["City"], classes) == 0.0
    # LongBench scores only the first line of trec's prediction
    assert m("classification@first_line", "\nCity\nCountry", ["City"], classes) == 1.0
    assert m("classification", "\nCity\nCountry", ["City"], classes) == 0.5
    # "Location" is part of the reference's name and dropped: 1 of 1
    assert (
        m("classification", "Location or City Location", ["City Location"], ["Location", "City Location"])
        == 1.0
    )
    # LongBench's scan steps over the name after a dropped one: "A" is dropped, "AB" stays
    assert m("classification", "A AB ABC", ["ABC"], ["A", "AB", "ABC"]) == 0.5
    with pytest.raises(MaskgraphError, match="all_classes"):
        m("classification", "City", ["City"], ())


def test_retrieval_and_count_scores():
    assert m("retrieval_en", "Paragraph 12, not paragraph 3", ["Paragraph 12"]) == 0.5
    assert m("retrieval_zh", "段落4", ["段落4"]) == 1.0
    assert m("count", "There are 7 unique paragraphs out of 9", ["7"]) == 0.5
    assert m("count", "no number", ["7"]) == 0.0


def test_multiple_choice_extraction():
    assert m("longbench_v2_choice", "The correct answer is (B)", ["B"]) == 1.0
    assert m("longbench_v2_choice", "**The correct answer is B**", ["B"]) == 1.0
    assert m("longbench_v2_choice", "I think B", ["B"]) == 0.0
    assert m("infinitebench_choice", "B. blue", ["blue", "B"]) == 1.0
    assert m("infinitebench_choice", "The answer is: C", ["blue", "B"]) == 0.0
    assert m("infinitebench_choice", "so I pick B", ["blue", "B"]) == 1.0
    # the first word that is a piece of "ABCD" is the answer, as InfiniteBench reads it
    assert m("infinitebench_choice", "so BC then B", ["blue", "B"]) == 0.0
    assert m("infinitebench_code_debug", "The answer is: func_7", ["func_7", "C"]) == 1.0
    assert m("infinitebench_code_debug", "C. it crashes", ["func_7", "C"]) == 1.0


def test_infinitebench_retrieval_math_and_code():
    assert m("first_integer", "The pass key is 71432.", ["71432"]) == 1.0
    assert m("first_integer", "7143 2", ["71432"]) == 0.0
    assert m("kv_retrieval", 'The value is "abc-123".', ["abc-123"]) == 1.0
    assert m("dialogue_name", "John.", ["JOHN"]) == 1.0
    assert m("math_find", "17 is the largest", ["17"]) == 1.0
    assert m("code_run", "The value is -6.", ["-6"]) == 1.0
    assert m("code_run", "-6 is it", ["-6"]) == 0.0  # the last word counts


def test_loogle_cloze_exact_match():
    ref = '{"<mask-0>": "Ada Lowe", "<mask-1>": "Port Office"}'
    assert m("cloze_exact", "{'<mask-0>': 'Ada Lowe', '<mask-1>': 'Harbor'}", [ref]) == 0.5
    assert m("cloze_exact", '{"<mask-0>": "Ada Lowe", "<mask-1>": "Port Office"}', [ref]) == 1.0
    assert m("cloze_exact", "Ada Lowe", [ref]) == 0.0


def test_ruler_string_match():
    assert m("string_match_all", "numbers: 4711", ["4711", "4712"]) == 0.5
    assert m("string_match_part", "It is BLUE", ["blue", "azure"]) == 1.0


def test_scoring_dispatches_to_benchmark_metrics_and_names_unknown_ones():
    assert score("City or Country", ["City"], "classification", ["City", "Country"]) == 0.5
    assert score("forty big ships sailed", ["forty ships"], "qa_f1") == pytest.approx(2 / 3)
    with pytest.raises(MaskgraphError, match="unknown metric 'bleu'.*qa_f1"):
        score("x", ["x"], "bleu")
    with pytest.raises(MaskgraphError, match="at least one reference"):
        bench_score("x", [], "qa_f1")
