"""Whether a calibration file fits the model it is used with: the architecture fields a file
records (``model_signature``) and the check that ``mg.inject`` runs through the operators'
``check_model`` hook. Kept beside the operators that read calibration files, so that they need
nothing from :mod:`maskgraph.calibrate` (which writes the files and imports the operators)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import CalibrationError

#: What identifies a model's architecture in a calibration file (transformers config names).
SIGNATURE_FIELDS = (
    "model_type",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_size",
    "vocab_size",
)


def model_signature(model: Any) -> dict[str, Any]:
    """The :data:`SIGNATURE_FIELDS` of a transformers model (its text config): a dict with
    ``num_key_value_heads`` defaulting to the heads and ``head_dim`` to hidden_size // heads."""
    config = model.config
    text = getattr(config, "get_text_config", None)
    config = text() if callable(text) else config
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    head_dim = getattr(config, "head_dim", None) or (hidden // heads if hidden and heads else None)
    return {
        "model_type": getattr(config, "model_type", None),
        "num_hidden_layers": getattr(config, "num_hidden_layers", None),
        "num_attention_heads": heads,
        "num_key_value_heads": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": head_dim,
        "hidden_size": hidden,
        "vocab_size": getattr(config, "vocab_size", None),
    }


def check_model(path: str | Path, metadata: dict[str, str], model: Any, shapes: dict[str, int]) -> None:
    """Raise CalibrationError unless the calibration file at ``path`` fits ``model``.

    ``shapes``: signature fields the file's tensors imply (layers, heads, head dim); they are
    compared with the model's, and so is every field of the file's ``model_signature``
    (files written before it existed are checked by their shapes alone).
    """
    used = model_signature(model)
    recorded: dict[str, Any] = {}
    if metadata.get("model_signature"):
        try:
            recorded = json.loads(metadata["model_signature"])
        except ValueError:
            raise CalibrationError(f"{path}: metadata model_signature is not JSON") from None
        if not isinstance(recorded, dict):
            raise CalibrationError(f"{path}: metadata model_signature is not a JSON object")
    expected = {**recorded, **shapes}
    differ = [
        f"{name} {expected[name]!r} (the model has {used.get(name)!r})"
        for name in SIGNATURE_FIELDS
        if name in expected
        and expected[name] is not None
        and used.get(name) is not None
        and expected[name] != used[name]
    ]
    if differ:
        made_for = metadata.get("model") or "an unnamed model"
        raise CalibrationError(
            f"{path} was made for model '{made_for}', not for the model in use "
            f"('{_label(model)}'): {'; '.join(differ)}; calibrate this model "
            f"(`maskgraph calibrate {metadata.get('kind', '...').replace('_', '-')} --model ...`)"
        )


def _label(model: Any) -> str:
    """The model's ``name_or_path`` (or its class name) for a message."""
    config = getattr(model, "config", None)
    label = getattr(config, "_name_or_path", "") or type(model).__name__
    return Path(label).name or label
