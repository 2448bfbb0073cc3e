"""Calibration built in: what Double Sparsity and HashAttention need, made from a model and some text.

    from maskgraph.calibrate import calibrate_double_sparsity, calibrate_hashattention
    result = calibrate_double_sparsity(model, tokenizer, text, tokens=4096)
    result.save("double_sparsity.safetensors")

The command line is ``maskgraph calibrate double-sparsity|hashattention``; file formats are in
:mod:`maskgraph.calibrate.formats`.
"""

from __future__ import annotations

from .capture import CapturedQK, capture_qk, capturing
from .double_sparsity import ChannelCalibration, calibrate_double_sparsity, rank_channels
from .formats import load_channels, load_hash_weights, save_channels, save_hash_weights
from .hashattention import HashCalibration, HashConfig, calibrate_hashattention

__all__ = [
    "CapturedQK",
    "ChannelCalibration",
    "HashCalibration",
    "HashConfig",
    "calibrate_double_sparsity",
    "calibrate_hashattention",
    "capture_qk",
    "capturing",
    "load_channels",
    "load_hash_weights",
    "rank_channels",
    "save_channels",
    "save_hash_weights",
]
