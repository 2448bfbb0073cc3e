"""Double Sparsity: scores from a few calibrated "label" channels (Yang et al. 2024).

Per layer and KV head, calibration orders the D channels by importance. The estimator keeps
the ``D // group_factor`` most important ones: a label cache of the keys restricted to them
(optionally quantised to ``label_bits`` per key) lives in State, and a query scores key j by

    scaling · Σ_{c ∈ labels(layer, head)} q_c · k̂_{j,c}

Channel file (safetensors): tensor ``channels`` int64 (num_layers, Hkv, D), per layer and KV
head a permutation of 0..D−1, most important first; metadata ``{"kind": "double_sparsity",
...}``. ``maskgraph calibrate double-sparsity`` makes it. Channels are per layer.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...attention import f32_bmm
from ...errors import CalibrationError
from ...kernels import DOUBLE_SPARSITY, jitted
from ...lowering import EstimatedScores, EstimatorLowering
from ...registry import Param, Port, operator
from ...static_keys import StaticKeys, row_caches
from ...triton_util import pdl, usable
from ...types import PortType
from .filecache import cached_load

KIND = "double_sparsity"
HOW_TO_CALIBRATE = (
    "make one with `maskgraph calibrate double-sparsity --model NAME --out FILE` and pass it as "
    "the graph parameter ds_channels"
)


# ----- the channel file ---------------------------------------------------------------------------
def save_channels(
    path: str | os.PathLike, channels: torch.Tensor, meta: dict[str, Any] | None = None
) -> None:
    """Write ``channels`` (num_layers, Hkv, D) int64 with metadata (values stored as strings)."""
    from safetensors.torch import save_file

    info = {str(k): str(v) for k, v in (meta or {}).items()}
    info["kind"] = KIND
    channels = channels.detach().to(torch.int64).cpu().contiguous()
    _check_channels(channels, info, str(path))
    save_file({"channels": channels}, str(path), metadata=info)


def load_channels(path: str | os.PathLike) -> tuple[torch.Tensor, dict[str, str]]:
    """Read and validate a channel file -> (channels (L, Hkv, D) int64, metadata)."""
    path = str(path)
    if not Path(path).is_file():
        raise CalibrationError(f"Double Sparsity channel file {path!r} does not exist; {HOW_TO_CALIBRATE}")
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as fh:
            info = fh.metadata() or {}
            names = list(fh.keys())
            if names != ["channels"]:
                raise CalibrationError(
                    f"{path}: malformed channel file: tensors {names}, expected only 'channels'"
                )
            channels = fh.get_tensor("channels")
    except CalibrationError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure means a malformed file
        raise CalibrationError(
            f"cannot read Double Sparsity channels {path!r} ({type(exc).__name__}: {exc}); {HOW_TO_CALIBRATE}"
        ) from None
    _check_channels(channels, info, path)
    return channels, info


def _check_channels(channels: torch.Tensor, info: dict[str, str], path: str) -> None:
    def bad(why: str) -> CalibrationError:
        return CalibrationError(f"{path}: malformed Double Sparsity channels: {why}")

    if info.get("kind") != KIND:
        raise bad(f"metadata kind is {info.get('kind')!r}, expected {KIND!r}")
    if channels.dtype != torch.int64 or channels.dim() != 3:
        raise bad(f"'channels' is {channels.dtype} {tuple(channels.shape)}, expected int64 (L, Hkv, D)")
    d = channels.shape[-1]
    if channels.numel() and not torch.equal(channels.sort(-1).values, torch.arange(d).expand_as(channels)):
        raise bad("each (layer, head) row must be a permutation of 0..D-1")


def cached_channels(path: str) -> tuple[torch.Tensor, dict[str, str]]:
    """:func:`load_channels`, memoised on (path, modification time, size)."""
    return cached_load(load_channels, path)


def check_channels_fit(params: dict, model) -> None:
    """``check_model`` hook: the channel file (if one is set) was made for ``model``'s
    architecture (see :func:`maskgraph.ops.zoo.model_fit.check_model`)."""
    from .model_fit import check_model

    path = params["channels"]
    if path is None:
        return  # prepare names the missing file
    channels, info = cached_channels(path)
    layers, hkv, d = channels.shape
    check_model(path, info, model, {"num_hidden_layers": layers, "num_key_value_heads": hkv, "head_dim": d})


# ----- label cache --------------------------------------------------------------------------------
def quantise_rows(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Uniform min–max quantisation of each last-dim row to ``2**bits`` levels, dequantised.

    x (…, r) float32. ``bits == 16`` returns x unchanged.
    """
    codes, lo, step = quantise_codes(x, bits)
    return lo + codes.float() * step


def quantise_codes(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The codes behind :func:`quantise_rows`: x (…, r) float32 -> (codes (…, r), lo (…, 1),
    step (…, 1)) with x ≈ lo + codes·step. ``bits < 16``: codes are the integers 0..2**bits − 1
    held in bfloat16 (exact up to 8 bits) or float32; ``bits == 16``: codes = x, lo = 0, step = 1.
    """
    if bits >= 16:
        return x, torch.zeros_like(x[..., :1]), torch.ones_like(x[..., :1])
    lo = x.amin(-1, keepdim=True)
    step = ((x.amax(-1, keepdim=True) - lo) / (2**bits - 1)).clamp_min(torch.finfo(x.dtype).tiny)
    codes = torch.round((x - lo) / step)
    return codes.to(torch.bfloat16 if bits <= 8 else torch.float32), lo, step


#: Keys per program of the grouped score kernel, at most DS_TILE // (G padded to a power of
#: two) so that the (heads, keys) dot products stay in registers. Each key's words are loaded
#: once and taken apart in registers (a lane per code loading its word is slower).
DS_BLOCK = 1024
DS_TILE = 4096
DS_WARPS = 4


def codes_per_word(bits: int) -> int:
    """Label codes of ``bits`` (≤ 8) packed in one int32 word."""
    return 32 // bits


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes 0..2**bits − 1 (…, r) (any dtype, ``bits`` ≤ 8) -> int32 words (…, W),
    W = ceil(r / (32 // bits)); code c sits in word c // cpw at bit (c % cpw)·bits."""
    cpw = codes_per_word(bits)
    r = codes.shape[-1]
    words = -(-r // cpw)
    c = F.pad(codes.to(torch.int64), (0, words * cpw - r)).view(*codes.shape[:-1], words, cpw)
    shifts = torch.arange(cpw, device=codes.device, dtype=torch.int64) * bits
    packed = (c << shifts).sum(-1)  # disjoint bit fields: the sum is the OR
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def unpack_codes(words: torch.Tensor, r: int, bits: int) -> torch.Tensor:
    """The inverse of :func:`pack_codes`: int32 (…, W) -> codes (…, r) bfloat16 (exact integers)."""
    cpw = codes_per_word(bits)
    shifts = torch.arange(cpw, device=words.device, dtype=torch.int64) * bits
    x = (words.to(torch.int64) & 0xFFFFFFFF).unsqueeze(-1) >> shifts
    # the low ``bits`` bits by shifts alone: with ``bits`` symbolic (torch.compile, dynamic
    # shapes) inductor wrote the mask 2**bits − 1 as a float power, which Triton refuses in a
    # bitwise and
    c = x - ((x >> bits) << bits)
    return c.flatten(-2)[..., :r].to(torch.bfloat16)


def label_codes(prep: dict, bits: int) -> torch.Tensor:
    """The label codes (B, Hkv, K, r) of a prepare result: unpacked for ``bits`` ≤ 8."""
    labels = prep["labels"]
    return unpack_codes(labels, prep["idx"].shape[-1], bits) if bits <= 8 else labels


def label_channels(channels: torch.Tensor, layer_idx: int, group_factor: int, path: str) -> torch.Tensor:
    """The ``D // group_factor`` most important channels of ``layer_idx``: (Hkv, r) int64."""
    layers, _, d = channels.shape
    if layer_idx >= layers:
        raise CalibrationError(
            f"{path}: channels for {layers} layers, layer {layer_idx} requested; {HOW_TO_CALIBRATE}"
        )
    r = d // group_factor
    if r < 1:
        raise CalibrationError(f"group_factor={group_factor} leaves no channel of D={d}")
    return channels[layer_idx, :, :r]


def label_cache_rows(
    keys: torch.Tensor, _values, idx: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Label-cache rows of keys (B, H, n, D): (codes — packed int32 (B, H, n, W) for ``bits``
    ≤ 8, else (B, H, n, r) —, lo (B, H, n, 1), step (B, H, n, 1)) for channels ``idx`` (H, r)."""
    b, h, n, _ = keys.shape
    picked = torch.gather(keys.float(), -1, idx.view(1, h, 1, -1).expand(b, h, n, -1))
    codes, lo, step = quantise_codes(picked, bits)
    return (pack_codes(codes, bits) if bits <= 8 else codes), lo, step


def prepare_double_sparsity(
    keys, values, params, slot, layer_idx, static: StaticKeys | None = None
) -> dict[str, torch.Tensor]:
    """Label cache, appended per step (rewritten in place for a static buffer): ``labels`` the
    quantisation codes — for label_bits ≤ 8 packed into int32 words (B, Hkv, K, W), label_bits
    bits per label (:func:`pack_codes`;
    :func:`label_codes` unpacks them), else (B, Hkv, K, r) float32 —, ``lo`` and ``step``
    (B, Hkv, K, 1) float32 (label ≈ lo + code·step), and the channel indices ``idx`` (Hkv, r)
    int64 of this layer. Raises CalibrationError without a valid channel file."""
    path = params["channels"]
    if path is None:
        raise CalibrationError(f"Double Sparsity needs calibrated label channels; {HOW_TO_CALIBRATE}")
    channels, _ = cached_channels(path)
    b, h, k, d = keys.shape
    if tuple(channels.shape[1:]) != (h, d):
        raise CalibrationError(
            f"{path}: channels are for (Hkv, D)={tuple(channels.shape[1:])}, the keys have {(h, d)}"
        )
    bits = params["label_bits"]
    config = (os.path.abspath(path), os.stat(path).st_mtime_ns, params["group_factor"], bits, layer_idx)
    idx = slot.get("idx")
    if slot.get("config") != config or idx is None or idx.device != keys.device:
        # kept on the keys' device: no host-to-device copy per call (none is allowed while a
        # CUDA graph is recorded)
        idx = label_channels(channels, layer_idx, params["group_factor"], path).to(keys.device)
    labels = slot.get("labels")
    stale = labels is not None and (
        labels.shape[:2] != (b, h) or labels.device != keys.device or slot.get("config") != config
    )

    labels, lo, step = row_caches(
        slot, ["labels", "lo", "step"], keys, values, label_cache_rows, stale, static, (idx, bits)
    )
    slot.update(config=config, idx=idx)
    return {"labels": labels, "lo": lo, "step": step, "idx": idx}


def query_labels(env, prep) -> torch.Tensor:
    """The queries' label channels (B, Hkv, G·Q, r), row g·Q + i for query head kv·G + g."""
    idx = prep["idx"]
    b, hkv = prep["labels"].shape[:2]
    r = idx.shape[-1]
    gq = (env.Hq // hkv) * env.Q
    q = env.queries.reshape(b, hkv, gq, env.D)
    return torch.gather(q, -1, idx.view(1, hkv, 1, r).expand(b, hkv, gq, r))


def double_sparsity_sparse_scores(env, prep, **params) -> EstimatedScores:
    """scaling·Σ_label q_c·k̂_c (B, Hq, Qc, K) float32 from the label cache only; −inf where the
    attention mask forbids a key. Blocks of one key."""
    labels = label_codes(prep, params["label_bits"])
    b, hkv, k, r = labels.shape
    q_lab = query_labels(env, prep)
    gq = q_lab.shape[2]
    # Σ q_c (lo + code_c·step) = lo·Σ q_c + step·(q · codes); with bf16 queries and codes the
    # product is exact and accumulates in float32 (one small GEMM over 2-byte codes)
    if q_lab.dtype != labels.dtype:
        q_lab, labels = q_lab.float(), labels.float()
    dot = f32_bmm(q_lab.reshape(b * hkv, gq, r), labels.reshape(b * hkv, k, r).transpose(1, 2))
    dot = dot.view(b, hkv, gq, k)
    lo, step = prep["lo"].view(b, hkv, 1, k), prep["step"].view(b, hkv, 1, k)
    scores = (lo * q_lab.float().sum(-1, keepdim=True) + step * dot) * env.scaling
    return EstimatedScores(env.forbid(scores.view(b, env.Hq, env.Q, k)), 1)


@torch.library.custom_op("maskgraph::ds_group_scores", mutates_args=())
def _ds_group_scores(
    q_lab: torch.Tensor,
    words: torch.Tensor,
    lo: torch.Tensor,
    step: torch.Tensor,
    n_q: int,
    bits: int,
    scaling: float,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q_lab (B, H, G·Q, r) in the queries' dtype — H = Hkv: each KV group's G query heads;
    H = Hq, G = 1: each query head alone — packed codes (B, Hkv, K, W) int32, lo/step
    (B, Hkv, K, 1) -> (B, H, Q, K) float32 scores (the max over each row's G heads) and their
    bounds (B, H, Q, ⌈K / block⌉, 2) int32 (``ranges`` of the Triton top-k) (Triton; the label
    channels are converted and summed in the kernel: no launch of their own). ``mask``: an
    additive (B|1, H|1, Q|1, K) attention mask (keys contiguous) the kernel applies (−inf)."""
    from ...lowering.keymask import mask_strides

    b, hkv, k, nw = words.shape
    heads, r = q_lab.shape[1], q_lab.shape[-1]
    out = torch.empty(b, heads, n_q, k, device=words.device, dtype=torch.float32)
    g = q_lab.shape[2] // n_q
    gp = 1 << (g - 1).bit_length()
    block = _ds_block(gp)
    grid = (b * heads * n_q, -(-k // block))
    ranges = torch.empty(b, heads, n_q, grid[1], 2, device=words.device, dtype=torch.int32)
    jitted(DOUBLE_SPARSITY, "ds_group_scores")[grid](
        q_lab.contiguous(), words.contiguous(), lo.contiguous(), step.contiguous(), out, ranges,
        out if mask is None else mask, k, n_q, heads, g, heads // hkv, r, scaling, *mask_strides(mask),
        BLOCK=block, GP=gp, NW=nw, BITS=bits, PER=codes_per_word(bits), HAS_AM=mask is not None,
        num_warps=DS_WARPS, **pdl(words.device, grid[0] * grid[1]),
    )  # fmt: skip
    return out, ranges


def _ds_block(gp: int) -> int:
    """Keys per program of the group-score kernel for groups of ``gp`` (a power of two) heads."""
    return max(16, min(DS_BLOCK, DS_TILE // gp))


@_ds_group_scores.register_fake
def _(q_lab, words, lo, step, n_q, bits, scaling, mask=None):
    b, k = words.shape[0], words.shape[2]
    heads = q_lab.shape[1]
    blocks = -(-k // _ds_block(1 << (q_lab.shape[2] // n_q - 1).bit_length()))
    out = words.new_empty(b, heads, n_q, k, dtype=torch.float32)
    return out, words.new_empty(b, heads, n_q, blocks, 2, dtype=torch.int32)


def double_sparsity_group_scores(env, prep, *, per_head: bool = False, **params) -> EstimatedScores | None:
    """The max over each KV group's query heads of :func:`double_sparsity_sparse_scores`:
    (B, Hkv, Qc, K) float32, −inf where forbidden (the mask must be the same for every head),
    in one Triton kernel that reads the packed codes (no per-query-head scores written); None
    where Triton cannot run or the codes are not packed (label_bits > 8). ``per_head``: each
    query head's own scores (B, Hq, Qc, K) by the same kernel (any attention mask). The kernel
    applies the mask where it can (:func:`maskgraph.lowering.keymask.kernel_mask`;
    ``masked`` says so), else torch does."""
    from ...lowering.keymask import kernel_mask

    labels, bits = prep["labels"], params["label_bits"]
    if not usable(labels.device) or bits > 8:
        return None
    q_lab = query_labels(env, prep)
    if per_head:  # row g·Q + i of KV head kv is query head kv·G + g
        q_lab = q_lab.reshape(env.B, env.Hq, env.Q, q_lab.shape[-1])
    applied = kernel_mask(env, per_head)
    mask = None if applied is None else applied[0]
    out, ranges = _ds_group_scores(
        q_lab, labels, prep["lo"], prep["step"], env.Q, bits, float(env.scaling), mask
    )  # fmt: skip
    if applied is None:
        return EstimatedScores(env.forbid(out), 1, ranges=ranges)
    return EstimatedScores(out, 1, ranges=ranges, masked=True)


@operator(
    "double_sparsity",
    family="estimator",
    output=PortType.SCORES,
    inputs=[Port("queries", PortType.QUERIES), Port("keys", PortType.KEYS)],
    params=[
        Param("channels", "path", doc="channel-order file (maskgraph calibrate double-sparsity)"),
        Param("group_factor", "int", 8, "label channels = D // group_factor", low=1),
        Param("label_bits", "int", 4, "bits per label-cache value (16 = not quantised)", low=1, high=16),
    ],
    doc=(
        "Label-channel scores: scaling·Σ q_c·k_c over the D // group_factor most important "
        "channels of this layer and KV head (calibrated), keys' label channels cached in State "
        "and quantised to label_bits per key. −inf where the attention mask forbids a key. "
        "Shape (B, Hq, Q, K). Needs a channel file."
    ),
    paper="Yang et al. 2024, Post-Training Sparse Attention with Double Sparsity",
    prepare=prepare_double_sparsity,
    check_model=check_channels_fit,
    calibration="channels",
    stateful=True,
    batch_rows=("labels", "lo", "step"),
    static_buffers=True,
    sparse=EstimatorLowering(
        double_sparsity_sparse_scores,
        group_scores=double_sparsity_group_scores,
        head_scores=functools.partial(double_sparsity_group_scores, per_head=True),
    ),
)
def double_sparsity(env, *, channels, group_factor, label_bits, prep) -> torch.Tensor:
    return double_sparsity_sparse_scores(env, prep, label_bits=label_bits).scores
