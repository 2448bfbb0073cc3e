"""Which model to calibrate: a shipped model name, a saved HuggingFace folder, or a tiny random one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..errors import CalibrationError
from .text import ByteTokenizer

#: ``tiny-<arch>`` names a random 2-layer model of :func:`maskgraph.hf.models.tiny_model` (tests).
TINY_PREFIX = "tiny-"

DEFAULT_MODEL = "smollm2"


def load(name: str, *, seed: int = 0) -> tuple[torch.nn.Module, Any]:
    """``(model, tokenizer)`` for ``name``: a folder saved by ``save_pretrained``, ``tiny-<arch>``
    (a random 2-layer model with a byte tokenizer, for tests) or a name known to
    :func:`maskgraph.hf.models.load_model` (e.g. ``smollm2``)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return _load_folder(path)
    from ..hf import models as hf_models

    if name.startswith(TINY_PREFIX):
        model = hf_models.tiny_model(name[len(TINY_PREFIX) :], seed=seed)
        return model, ByteTokenizer(model.config.vocab_size)
    model, tokenizer = hf_models.load_model(name)
    return model.eval(), tokenizer


def _load_folder(path: Path) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").is_file():
        raise CalibrationError(f"{path} is not a saved HuggingFace model (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    has_tokenizer = any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = (
        AutoTokenizer.from_pretrained(path) if has_tokenizer else ByteTokenizer(model.config.vocab_size)
    )
    return model, tokenizer


def model_label(name_or_model: Any) -> str:
    """A short name for metadata and default paths: the CLI name, or the model's ``name_or_path``."""
    if isinstance(name_or_model, str):
        label = Path(name_or_model).name if Path(name_or_model).expanduser().is_dir() else name_or_model
    else:
        config = getattr(name_or_model, "config", None)
        label = getattr(config, "_name_or_path", "") or type(name_or_model).__name__
        label = Path(label).name or label
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-").lower() or "model"


def default_out(label: str, kind: str) -> Path:
    """``~/.cache/maskgraph/calibration/<label>/<kind>.safetensors`` (under ``$MASKGRAPH_CACHE``
    when set): where ``maskgraph calibrate`` writes and where the commands look for it."""
    from ..hf.models import cache_root

    return cache_root() / "calibration" / label / f"{kind}.safetensors"
