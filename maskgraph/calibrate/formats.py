"""The calibration file formats (safetensors, never pickle) — a contract with ``maskgraph.ops.zoo``.

Double Sparsity (``kind = "double_sparsity"``):
    tensor ``channels`` int64 ``(num_layers, Hkv, D)``: per layer and KV head, every channel index,
    most important first. Metadata: kind, model, num_layers, num_kv_heads, head_dim, tokens.

HashAttention (``kind = "hashattention"``), per layer ``L``:
    ``layer{L}.query.w1 (Hq, D, hidden)``, ``layer{L}.query.b1 (Hq, hidden)``,
    ``layer{L}.query.w2 (Hq, hidden, bits)``, ``layer{L}.query.b2 (Hq, bits)`` and the same
    ``layer{L}.key.*`` with Hkv heads; float32. bit = w2ᵀ·silu(w1ᵀ·x + b1) + b2 > 0.
    Metadata: kind, hat_bits, hidden, model, num_layers (and the held-out recall).

Metadata values are strings (safetensors allows nothing else).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..errors import CalibrationError

DOUBLE_SPARSITY = "double_sparsity"
HASHATTENTION = "hashattention"
MLP_PARTS = ("w1", "b1", "w2", "b2")


def _str_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in metadata.items()}


def _write(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=_str_metadata(metadata))
    return path


def _read(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise CalibrationError(f"calibration file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CalibrationError(f"{path} is not a readable safetensors file: {exc}") from None
    if metadata.get("kind") != kind:
        raise CalibrationError(f"{path} holds {metadata.get('kind')!r} calibration, not {kind!r}")
    return tensors, metadata


def save_channels(path: str | Path, channels: torch.Tensor, metadata: dict[str, Any]) -> Path:
    """Write a Double Sparsity channel order ``(num_layers, Hkv, D)`` int64 (a permutation per row)."""
    check_channels(channels)
    n, hkv, d = channels.shape
    meta = {**metadata, "kind": DOUBLE_SPARSITY, "num_layers": n, "num_kv_heads": hkv, "head_dim": d}
    return _write(path, {"channels": channels.to(torch.int64)}, meta)


def load_channels(path: str | Path) -> tuple[torch.Tensor, dict[str, str]]:
    """``(channels (num_layers, Hkv, D) int64, metadata)`` from a Double Sparsity file."""
    tensors, metadata = _read(path, DOUBLE_SPARSITY)
    if "channels" not in tensors:
        raise CalibrationError(f"{path} has no 'channels' tensor")
    check_channels(tensors["channels"])
    return tensors["channels"], metadata


def check_channels(channels: torch.Tensor) -> None:
    """Raise unless ``channels`` is an integer ``(num_layers, Hkv, D)`` permutation of 0..D-1 per row."""
    if channels.ndim != 3 or channels.dtype.is_floating_point:
        raise CalibrationError(
            f"channels must be integer (num_layers, Hkv, D), got {channels.dtype} {tuple(channels.shape)}"
        )
    d = channels.shape[-1]
    expected = torch.arange(d, dtype=torch.int64)
    if not torch.equal(channels.to(torch.int64).sort(dim=-1).values, expected.expand_as(channels)):
        raise CalibrationError("every row of channels must be a permutation of 0..D-1")


HashWeights = list[dict[str, dict[str, torch.Tensor]]]
"""Per layer: ``{"query": {"w1", "b1", "w2", "b2"}, "key": {...}}``."""


def save_hash_weights(path: str | Path, weights: HashWeights, metadata: dict[str, Any]) -> Path:
    """Write per-layer query/key hash MLPs (see the module docstring for names and shapes)."""
    tensors: dict[str, torch.Tensor] = {}
    for layer, sides in enumerate(weights):
        for side in ("query", "key"):
            check_mlp(sides[side], f"layer {layer} {side}")
            for part in MLP_PARTS:
                tensors[f"layer{layer}.{side}.{part}"] = sides[side][part].float()
    first = weights[0]["query"]
    meta = {
        **metadata,
        "kind": HASHATTENTION,
        "hat_bits": first["w2"].shape[-1],
        "hidden": first["w1"].shape[-1],
        "num_layers": len(weights),
    }
    return _write(path, tensors, meta)


def load_hash_weights(path: str | Path) -> tuple[HashWeights, dict[str, str]]:
    """``(weights per layer, metadata)`` from a HashAttention file."""
    tensors, metadata = _read(path, HASHATTENTION)
    pattern = re.compile(r"layer(\d+)\.(query|key)\.(w1|b1|w2|b2)")
    found: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
    for name, tensor in tensors.items():
        match = pattern.fullmatch(name)
        if not match:
            raise CalibrationError(f"{path}: unexpected tensor {name!r}")
        layer, side, part = int(match[1]), match[2], match[3]
        found.setdefault(layer, {}).setdefault(side, {})[part] = tensor
    if sorted(found) != list(range(len(found))) or not found:
        raise CalibrationError(f"{path}: layers {sorted(found)} are not 0..n-1")
    weights = [found[layer] for layer in range(len(found))]
    for layer, sides in enumerate(weights):
        for side in ("query", "key"):
            if side not in sides:
                raise CalibrationError(f"{path}: layer {layer} has no {side} MLP")
            check_mlp(sides[side], f"{path}: layer {layer} {side}")
    return weights, metadata


def check_mlp(mlp: dict[str, torch.Tensor], where: str) -> None:
    """Raise unless ``mlp`` holds w1 (H,D,hidden), b1 (H,hidden), w2 (H,hidden,bits), b2 (H,bits)."""
    missing = [p for p in MLP_PARTS if p not in mlp]
    if missing:
        raise CalibrationError(f"{where}: missing {', '.join(missing)}")
    w1, b1, w2, b2 = (mlp[p] for p in MLP_PARTS)
    h, _, hidden = w1.shape if w1.ndim == 3 else (None, None, None)
    ok = (
        w1.ndim == 3
        and b1.shape == (h, hidden)
        and w2.ndim == 3
        and w2.shape[:2] == (h, hidden)
        and b2.shape == (h, w2.shape[-1])
    )
    if not ok:
        shapes = {p: tuple(mlp[p].shape) for p in MLP_PARTS}
        raise CalibrationError(f"{where}: inconsistent MLP shapes {shapes}")
