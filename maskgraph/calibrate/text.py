"""Calibration text: the shipped default, tokenising, and cutting tokens into windows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import CalibrationError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

#: Shipped texts the calibration may use by default, in order of preference (the first present wins).
DEFAULT_TEXT_NAMES = ("marrow_point.txt",)


def default_text_path() -> Path:
    """The shipped text calibration reads when no ``--text`` is given."""
    for name in DEFAULT_TEXT_NAMES:
        path = DATA_DIR / name
        if path.is_file():
            return path
    raise CalibrationError(
        f"no default calibration text is shipped in {DATA_DIR} (looked for {', '.join(DEFAULT_TEXT_NAMES)}); "
        "pass --text FILE"
    )


def read_text(path: str | Path | None = None) -> str:
    """The text of ``path`` (or of the shipped default)."""
    path = Path(path) if path is not None else default_text_path()
    if not path.is_file():
        raise CalibrationError(f"calibration text {path} does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise CalibrationError(f"calibration text {path} is empty")
    return text


class ByteTokenizer:
    """Bytes of UTF-8 text as token ids (modulo ``vocab_size``): a tokenizer for random tiny models."""

    def __init__(self, vocab_size: int = 256) -> None:
        self.vocab_size = int(vocab_size)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [b % self.vocab_size for b in text.encode("utf-8")]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """The bytes ``ids`` name, as text (undecodable bytes replaced)."""
        return bytes(int(i) % 256 for i in ids).decode("utf-8", errors="replace")


def encode(tokenizer: Any, text: str) -> torch.Tensor:
    """Token ids ``(T,)`` int64 of ``text``, without special tokens.

    ``tokenizer`` is a transformers tokenizer or any object with ``encode(text) -> list[int]``.
    """
    if hasattr(tokenizer, "backend_tokenizer") or hasattr(tokenizer, "batch_encode_plus"):
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    elif hasattr(tokenizer, "encode"):
        ids = tokenizer.encode(text)
    else:
        raise CalibrationError(f"cannot tokenise with {type(tokenizer).__name__}: it has no encode()")
    return torch.as_tensor(ids, dtype=torch.long).reshape(-1)


def windows(ids: torch.Tensor, tokens: int, window: int) -> torch.Tensor:
    """The first ``tokens`` ids cut into ``tokens // window`` windows: ``(N, window)``.

    With ``tokens < window`` the result is one window of ``tokens`` ids.
    """
    if tokens < 2 or window < 2:
        raise CalibrationError(f"need at least 2 tokens and a window of at least 2 (got {tokens}, {window})")
    if ids.numel() < tokens:
        raise CalibrationError(
            f"the text has {ids.numel()} tokens, fewer than the {tokens} asked for: use a longer text or fewer tokens"
        )
    window = min(window, tokens)
    n = tokens // window
    return ids[: n * window].reshape(n, window)
