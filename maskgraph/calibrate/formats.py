"""Writing and reading calibration files through the operators' own readers and writers.

The formats belong to the operators that read them (:mod:`maskgraph.ops.zoo.double_sparsity`
and :mod:`maskgraph.ops.zoo.hashattention`, safetensors, never pickle):

Double Sparsity: tensor ``channels`` int64 ``(num_layers, Hkv, D)``, per layer and KV head every
channel index, most important first; metadata kind, model, num_layers, num_kv_heads, head_dim,
tokens.

HashAttention, per layer ``L``: ``layer{L}.query.w1 (Hq, D, hidden)``, ``.b1 (Hq, hidden)``,
``.w2 (Hq, hidden, bits)``, ``.b2 (Hq, bits)`` and ``layer{L}.key.*`` with Hkv heads;
bit = w2ᵀ·silu(w1ᵀ·x + b1) + b2 > 0. Metadata kind, hat_bits, hidden, model (and the recall).

Both files also record ``model_signature``: a JSON object of the calibrated model's
architecture (:data:`SIGNATURE_FIELDS`). :func:`check_model` compares a file with the model it
is used with (``mg.inject`` calls it through the operators' ``check_model`` hook): the shapes
its tensors imply, and the signature where the file has one.

Here calibration results are adapted to those writers (creating the output folder), and files
are read back into calibration's layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import CalibrationError

DOUBLE_SPARSITY = "double_sparsity"
HASHATTENTION = "hashattention"
SIDES = ("query", "key")
MLP_PARTS = ("w1", "b1", "w2", "b2")

HashWeights = list[dict[str, dict[str, torch.Tensor]]]
"""Per layer: ``{"query": {"w1", "b1", "w2", "b2"}, "key": {...}}``."""

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
    from .models import model_label

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
            f"('{model_label(model)}'): {'; '.join(differ)}; calibrate this model "
            f"(`maskgraph calibrate {metadata.get('kind', '...').replace('_', '-')} --model ...`)"
        )


def _target(path: str | Path) -> Path:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_channels(path: str | Path, channels: torch.Tensor, metadata: dict[str, Any]) -> Path:
    """Write a Double Sparsity channel order ``(num_layers, Hkv, D)`` (a permutation per row)."""
    from ..ops.zoo.double_sparsity import save_channels as write

    n, hkv, d = channels.shape
    meta = {**metadata, "kind": DOUBLE_SPARSITY, "num_layers": n, "num_kv_heads": hkv, "head_dim": d}
    path = _target(path)
    write(path, channels.to(torch.int64), meta)
    return path


def load_channels(path: str | Path) -> tuple[torch.Tensor, dict[str, str]]:
    """``(channels (num_layers, Hkv, D) int64, metadata)`` of a Double Sparsity file."""
    from ..ops.zoo.double_sparsity import load_channels as read

    return read(Path(path).expanduser())


def save_hash_weights(path: str | Path, weights: HashWeights, metadata: dict[str, Any]) -> Path:
    """Write per-layer query/key hash MLPs."""
    from ..ops.zoo.hashattention import save_hash_weights as write

    per_layer = {
        layer: {f"{side}.{part}": sides[side][part] for side in SIDES for part in MLP_PARTS}
        for layer, sides in enumerate(weights)
    }
    path = _target(path)
    write(path, per_layer, {**metadata, "kind": HASHATTENTION, "num_layers": len(weights)})
    return path


def load_hash_weights(path: str | Path) -> tuple[HashWeights, dict[str, str]]:
    """``(weights per layer, metadata)`` of a HashAttention file."""
    from ..errors import CalibrationError
    from ..ops.zoo.hashattention import load_hash_weights as read

    per_layer, metadata = read(Path(path).expanduser())
    if sorted(per_layer) != list(range(len(per_layer))):
        raise CalibrationError(f"{path}: layers {sorted(per_layer)} are not 0..n-1")
    weights = [
        {side: {part: per_layer[layer][f"{side}.{part}"] for part in MLP_PARTS} for side in SIDES}
        for layer in range(len(per_layer))
    ]
    return weights, metadata
