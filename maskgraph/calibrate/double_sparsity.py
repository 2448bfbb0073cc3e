"""Double Sparsity calibration: per layer and KV head, channels ranked by importance.

Double Sparsity (Yang et al. 2024, "Post-Training Sparse Attention with Double Sparsity")
estimates q·k from a few "label" channels found offline. The importance of channel c of a KV
head is the mean magnitude of its contribution to the logits the model actually computes,
over the query heads of the group and the causal (query, key) pairs of the calibration text:

    pairwise:  I_c = mean over g, t, s ≤ t of |q_{g,t,c}| · |k_{s,c}|
    diagonal:  I_c = mean over g, t of |q_{g,t,c} · k_{t,c}|   (same-token products)

``pairwise`` is exact in O(L·D) per head through a running sum of |k|. Rankings are per layer
(the reference reuses layer 0's for every layer; this does not).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CalibrationError
from . import formats
from .capture import forward_windows
from .text import encode, windows

STATISTICS = ("pairwise", "diagonal")


def pairwise_importance(queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum over g, causal pairs (t, s ≤ t) of |q_{g,t,c}|·|k_{s,c}|: ``((B, Hkv, D) float64, pairs per row)``.

    queries ``(B, Hq, L, D)``, keys ``(B, Hkv, L, D)`` with Hq a multiple of Hkv.
    """
    b, hq, length, d = queries.shape
    hkv = keys.shape[1]
    aq = queries.double().abs().reshape(b, hkv, hq // hkv, length, d)
    running_k = keys.double().abs().cumsum(dim=2)  # (B, Hkv, L, D): Σ_{s ≤ t} |k_s|
    total = (aq * running_k[:, :, None]).sum(dim=(2, 3))
    return total, (hq // hkv) * length * (length + 1) // 2


def diagonal_importance(queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum over g, t of |q_{g,t,c}·k_{t,c}|: ``((B, Hkv, D) float64, terms per row)``."""
    b, hq, length, d = queries.shape
    hkv = keys.shape[1]
    aq = queries.double().abs().reshape(b, hkv, hq // hkv, length, d)
    total = (aq * keys.double().abs()[:, :, None]).sum(dim=(2, 3))
    return total, (hq // hkv) * length


_STATISTIC_FNS = {"pairwise": pairwise_importance, "diagonal": diagonal_importance}


def rank_channels(importance: torch.Tensor) -> torch.Tensor:
    """Channel indices ``(..., D)`` int64, most important first (ties: lower index first)."""
    return torch.sort(importance, dim=-1, descending=True, stable=True).indices.to(torch.int64)


@dataclass
class ImportanceAccumulator:
    """Running per-layer channel importance ``(Hkv, D)`` over captured batches."""

    statistic: str = "pairwise"
    sums: dict[int, torch.Tensor] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise CalibrationError(f"statistic must be one of {STATISTICS}, got {self.statistic!r}")

    def __call__(self, layer: int, queries: torch.Tensor, keys: torch.Tensor) -> None:
        if queries.shape[1] % keys.shape[1]:
            raise CalibrationError(
                f"layer {layer}: {queries.shape[1]} query heads for {keys.shape[1]} KV heads"
            )
        total, count = _STATISTIC_FNS[self.statistic](queries, keys)
        self.sums[layer] = self.sums.get(layer, 0) + total.sum(dim=0).cpu()
        self.counts[layer] = self.counts.get(layer, 0) + count * queries.shape[0]

    def importance(self) -> torch.Tensor:
        """Mean importance ``(num_layers, Hkv, D)`` float64."""
        layers = sorted(self.sums)
        if not layers or layers != list(range(len(layers))):
            raise CalibrationError(f"captured layers {layers} are not 0..n-1")
        return torch.stack([self.sums[i] / self.counts[i] for i in layers])


@dataclass
class ChannelCalibration:
    """Result of :func:`calibrate_double_sparsity`."""

    channels: torch.Tensor  # (num_layers, Hkv, D) int64, most important first
    importance: torch.Tensor  # (num_layers, Hkv, D) float64
    metadata: dict[str, Any]

    def save(self, path: str | Path) -> Path:
        """Write the channel file (format: :mod:`maskgraph.calibrate.formats`)."""
        return formats.save_channels(path, self.channels, self.metadata)


def calibrate_double_sparsity(
    model: torch.nn.Module,
    tokenizer: Any,
    text: str,
    *,
    tokens: int = 4096,
    window: int = 1024,
    statistic: str = "pairwise",
    batch_size: int = 1,
    model_name: str | None = None,
    progress: bool = False,
) -> ChannelCalibration:
    """Per-layer, per-KV-head channel order of ``model`` from the first ``tokens`` tokens of ``text``.

    The tokens are cut into windows of ``window`` tokens, each run as its own sequence.
    """
    from .models import model_label

    ids = windows(encode(tokenizer, text), tokens, window)
    accumulate = ImportanceAccumulator(statistic)
    forward_windows(model, ids, accumulate, batch_size=batch_size, progress=progress, desc="double-sparsity")
    importance = accumulate.importance()
    metadata = {
        "kind": formats.DOUBLE_SPARSITY,
        "model": model_name or model_label(model),
        "model_signature": json.dumps(formats.model_signature(model)),
        "tokens": ids.numel(),
        "window": ids.shape[1],
        "statistic": statistic,
    }
    return ChannelCalibration(rank_channels(importance), importance, metadata)
