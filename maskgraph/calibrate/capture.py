"""Capture the post-RoPE queries and keys a HuggingFace causal LM computes in each layer.

A capturing attention function is registered with ``transformers.AttentionInterface`` (and
sdpa's mask function under the same name with ``AttentionMaskInterface``, without which the
causal mask would silently vanish). While :func:`capturing` is active the model runs its
attention through it: every layer hands its queries ``(B, Hq, L, D)`` and keys ``(B, Hkv, L, D)``
to a callback, then attends with sdpa exactly as before. The model's attention implementation
is restored on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..errors import CalibrationError

#: Name under which the capturing attention is registered with transformers.
CAPTURE_IMPLEMENTATION = "maskgraph_capture"

#: ``callback(layer_idx, queries (B,Hq,L,D), keys (B,Hkv,L,D))`` — tensors as the model has them.
LayerCallback = Callable[[int, torch.Tensor, torch.Tensor], None]

_active: list[LayerCallback] = []


def _capture_attention(module, query, key, value, attention_mask, **kwargs):
    """Attention function seen by transformers: report (q, k) of this layer, then run sdpa."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    layer_idx = getattr(module, "layer_idx", None)
    if layer_idx is None:
        raise CalibrationError(f"attention module {type(module).__name__} has no layer_idx to capture by")
    if _active:
        _active[-1](int(layer_idx), query.detach(), key.detach())
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(CAPTURE_IMPLEMENTATION, _capture_attention)
    AttentionMaskInterface.register(CAPTURE_IMPLEMENTATION, sdpa_mask)


@contextmanager
def capturing(model: torch.nn.Module, callback: LayerCallback) -> Iterator[None]:
    """Within the block, every forward pass of ``model`` calls ``callback(layer, q, k)`` per layer.

    The queries and keys are post-RoPE (and post-cache-update for keys). The model's previous
    attention implementation is restored on exit, also when the block raises.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "set_attn_implementation"):
        raise CalibrationError("capture needs a transformers PreTrainedModel (with a config)")
    _register()
    previous = config._attn_implementation
    model.set_attn_implementation(CAPTURE_IMPLEMENTATION)
    _active.append(callback)
    try:
        yield
    finally:
        _active.pop()
        model.set_attn_implementation(previous)


@dataclass
class CapturedQK:
    """Per layer, queries ``(N, Hq, L, D)`` and keys ``(N, Hkv, L, D)`` of N windows (float32, CPU)."""

    queries: list[torch.Tensor] = field(default_factory=list)
    keys: list[torch.Tensor] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return len(self.queries)


def forward_windows(
    model: torch.nn.Module,
    windows: torch.Tensor,
    callback: LayerCallback,
    *,
    batch_size: int = 1,
    progress: bool = False,
    desc: str = "capture",
) -> None:
    """Run ``model`` over token windows ``(N, L)`` (each an independent sequence), calling
    ``callback(layer, q (b,Hq,L,D), k (b,Hkv,L,D))`` for every layer of every batch of windows."""
    from tqdm.auto import tqdm

    if windows.ndim != 2 or windows.shape[0] == 0:
        raise CalibrationError(f"token windows must be a non-empty (N, L) tensor, got {tuple(windows.shape)}")
    device = next(model.parameters()).device
    starts = range(0, windows.shape[0], batch_size)
    with torch.inference_mode(), capturing(model, callback):
        for start in tqdm(starts, desc=desc, unit="batch", disable=not progress):
            ids = windows[start : start + batch_size].to(device)
            model(input_ids=ids, use_cache=False)


def capture_qk(
    model: torch.nn.Module, windows: torch.Tensor, *, batch_size: int = 1, progress: bool = False
) -> CapturedQK:
    """Queries and keys of every layer for token windows ``(N, L)``, concatenated over windows."""
    per_layer: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    def keep(layer: int, q: torch.Tensor, k: torch.Tensor) -> None:
        qs, ks = per_layer.setdefault(layer, ([], []))
        qs.append(q.float().cpu())
        ks.append(k.float().cpu())

    forward_windows(model, windows, keep, batch_size=batch_size, progress=progress)
    layers = sorted(per_layer)
    if layers != list(range(len(layers))):
        raise CalibrationError(f"captured layers {layers} are not 0..n-1")
    out = CapturedQK()
    for layer in layers:
        qs, ks = per_layer[layer]
        out.queries.append(torch.cat(qs))
        out.keys.append(torch.cat(ks))
    return out
