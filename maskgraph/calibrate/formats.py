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
architecture (:data:`SIGNATURE_FIELDS`). :func:`check_model` compares a file with the model
it is used with (``mg.inject`` calls it through the operators' ``check_model`` hook): the
shapes its tensors imply, and the signature where the file has one. Both live in
:mod:`maskgraph.ops.zoo.model_fit`, beside the operators that call them.

Here calibration results are adapted to those writers (creating the output folder), and files
are read back into calibration's layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..ops.zoo.model_fit import SIGNATURE_FIELDS, check_model, model_signature  # noqa: F401 (re-exported)

DOUBLE_SPARSITY = "double_sparsity"
HASHATTENTION = "hashattention"
#: The kinds of file ``maskgraph calibrate`` makes, each named after the operator that reads it.
KINDS = (DOUBLE_SPARSITY, HASHATTENTION)
SIDES = ("query", "key")
MLP_PARTS = ("w1", "b1", "w2", "b2")

HashWeights = list[dict[str, dict[str, torch.Tensor]]]
"""Per layer: ``{"query": {"w1", "b1", "w2", "b2"}, "key": {...}}``."""


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
