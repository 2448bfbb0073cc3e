"""Perplexity text: verse labels stripped, windows cut as asked, the Debian KJV source."""

from __future__ import annotations

import shutil

import pytest

from maskgraph.errors import MaskgraphError
from maskgraph.eval.text import kjv_text, load_text, strip_verse_labels, windows


class CharTokenizer:
    def encode(self, text, add_special_tokens=False):
        return [ord(c) % 256 for c in text]


def test_strip_verse_labels_by_hand():
    raw = "Ge1:1 In the beginning God created the heaven and the earth.\nGe1:2 And the earth was void.\n"
    assert (
        strip_verse_labels(raw)
        == "In the beginning God created the heaven and the earth. And the earth was void."
    )
    assert strip_verse_labels("1Ki2:10 So David slept.") == "So David slept."


def test_windows_are_consecutive_and_exact():
    text = "abcdefghij" * 3
    ws = windows(CharTokenizer(), text, 7, 4)
    assert [w.shape for w in ws] == [(1, 7)] * 4
    assert ws[1][0].tolist() == [ord(c) for c in text[7:14]]
    with pytest.raises(MaskgraphError, match="4 windows"):
        windows(CharTokenizer(), text, 7, 5)


def test_load_text_file_and_missing(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("hello world")
    assert load_text(str(p)) == ("hello world", str(p))
    with pytest.raises(MaskgraphError):
        load_text(str(tmp_path / "missing.txt"))


@pytest.mark.skipif(shutil.which("bible") is None, reason="Debian's bible-kjv is not installed")
def test_kjv_genesis():
    text = kjv_text("Genesis 1:1-2")
    assert text.startswith("In the beginning God created the heaven and the earth. And the earth")
    assert "Ge1:" not in text
