"""HashAttention: learned per-head hash bits, score = agreeing bits (Desai et al., ICML 2025).

Per layer, a small MLP per query head and one per KV head (Linear → SiLU → Linear) map a
vector to ``hat_bits`` sign bits (bit = output > 0). A key scores, for a query, the number of
bits on which their signatures agree. Key signatures are cached in State packed 32 bits per
int32 word, and scored by XOR + popcount.

Weights file (safetensors, or .npz read with ``allow_pickle=False``; never pickle), per layer L:

    layer{L}.query.w1 (Hq, D, hidden)   layer{L}.query.b1 (Hq, hidden)
    layer{L}.query.w2 (Hq, hidden, bits) layer{L}.query.b2 (Hq, bits)
    layer{L}.key.*    the same with Hkv heads

and metadata ``{"kind": "hashattention", "hat_bits": "...", "hidden": "..."}`` (an .npz keeps
it as a JSON string in the array ``__metadata__``). ``maskgraph calibrate hashattention`` makes
the file.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import CalibrationError
from ...kernels import HASHATTENTION, jitted
from ...lowering import EstimatedScores, EstimatorLowering
from ...registry import Param, Port, operator
from ...static_keys import StaticKeys, row_caches
from ...triton_util import interpreting, pdl, usable
from ...types import PortType
from .filecache import cached_load

KIND = "hashattention"
HOW_TO_CALIBRATE = (
    "make one with `maskgraph calibrate hashattention --model NAME --out FILE` and pass it as "
    "the graph parameter hat_weights"
)
PARTS = ("w1", "b1", "w2", "b2")
SIDES = ("query", "key")
WORD_BITS = 32
_NAME = re.compile(r"^layer(\d+)\.(query|key)\.(w1|b1|w2|b2)$")
_NPZ_META = "__metadata__"

LayerWeights = dict[str, torch.Tensor]  # "query.w1" ... "key.b2"


# ----- the weights file ---------------------------------------------------------------------------
def save_hash_weights(
    path: str | os.PathLike, per_layer: dict[int, LayerWeights], meta: dict[str, Any] | None = None
) -> None:
    """Write hash weights: ``per_layer[L]["query.w1"]`` etc. (shapes in the module docstring).

    ``meta`` values are stored as strings; ``kind``, ``hat_bits`` and ``hidden`` are filled in
    from the tensors. A path ending in ``.npz`` writes numpy's format, anything else safetensors.
    """
    tensors: dict[str, torch.Tensor] = {}
    for layer, weights in per_layer.items():
        for side in SIDES:
            for part in PARTS:
                tensors[f"layer{int(layer)}.{side}.{part}"] = (
                    weights[f"{side}.{part}"].detach().float().cpu().contiguous()
                )
    any_layer = next(iter(per_layer.values()))
    info = {str(k): str(v) for k, v in (meta or {}).items()}
    info.update(
        kind=KIND,
        hat_bits=str(any_layer["query.w2"].shape[-1]),
        hidden=str(any_layer["query.w1"].shape[-1]),
    )
    _check_weights(tensors, info, str(path))
    if str(path).endswith(".npz"):
        arrays = {k: v.numpy() for k, v in tensors.items()}
        arrays[_NPZ_META] = np.array(json.dumps(info))
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=info)


def load_hash_weights(path: str | os.PathLike) -> tuple[dict[int, LayerWeights], dict[str, str]]:
    """Read and validate a weights file -> (per_layer dict, metadata). Raises CalibrationError."""
    path = str(path)
    if not Path(path).is_file():
        raise CalibrationError(f"HashAttention weights file {path!r} does not exist; {HOW_TO_CALIBRATE}")
    try:
        tensors, info = _read(path)
    except CalibrationError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure means a malformed file
        raise CalibrationError(
            f"cannot read HashAttention weights {path!r} ({type(exc).__name__}: {exc}); {HOW_TO_CALIBRATE}"
        ) from None
    _check_weights(tensors, info, path)
    per_layer: dict[int, LayerWeights] = {}
    for name, t in tensors.items():
        layer, side, part = _NAME.match(name).groups()
        per_layer.setdefault(int(layer), {})[f"{side}.{part}"] = t.float()
    return per_layer, info


def _read(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if _NPZ_META not in arrays:
            raise CalibrationError(f"{path}: no {_NPZ_META} array (not a maskgraph weights file)")
        info = json.loads(str(arrays.pop(_NPZ_META)))
        if not isinstance(info, dict):
            raise CalibrationError(f"{path}: {_NPZ_META} is not a JSON object")
        return {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, info
    from safetensors import safe_open

    with safe_open(path, framework="pt") as fh:
        info = fh.metadata() or {}
        return {k: fh.get_tensor(k) for k in fh.keys()}, info


def _check_weights(tensors: dict[str, torch.Tensor], info: dict[str, str], path: str) -> None:
    """Raise CalibrationError unless ``tensors``/``info`` form a complete, consistent file."""

    def bad(why: str) -> CalibrationError:
        return CalibrationError(f"{path}: malformed HashAttention weights: {why}")

    if info.get("kind") != KIND:
        raise bad(f"metadata kind is {info.get('kind')!r}, expected {KIND!r}")
    try:
        bits, hidden = int(info["hat_bits"]), int(info["hidden"])
    except (KeyError, ValueError):
        raise bad("metadata needs integer 'hat_bits' and 'hidden'") from None
    layers: dict[int, set[str]] = {}
    for name, t in tensors.items():
        match = _NAME.match(name)
        if match is None:
            raise bad(f"unexpected tensor {name!r}")
        if not t.is_floating_point():
            raise bad(f"tensor {name!r} has dtype {t.dtype}, expected floating point")
        if not bool(torch.isfinite(t).all()):
            bad_count = int((~torch.isfinite(t)).sum())
            raise bad(f"tensor {name!r} has {bad_count} non-finite values (NaN or inf) of {t.numel()}")
        layers.setdefault(int(match.group(1)), set()).add(f"{match.group(2)}.{match.group(3)}")
    if not layers:
        raise bad("no layers")
    for layer, names in sorted(layers.items()):
        missing = {f"{s}.{p}" for s in SIDES for p in PARTS} - names
        if missing:
            raise bad(f"layer {layer} lacks {', '.join(sorted(missing))}")
        for side in SIDES:
            w1, b1, w2, b2 = (tensors[f"layer{layer}.{side}.{p}"] for p in PARTS)
            if w1.dim() != 3 or w1.shape[2] != hidden:
                raise bad(f"layer{layer}.{side}.w1 has shape {tuple(w1.shape)}, expected (H, D, {hidden})")
            h = w1.shape[0]
            expect = {"b1": (h, hidden), "w2": (h, hidden, bits), "b2": (h, bits)}
            for part, t in zip(("b1", "w2", "b2"), (b1, w2, b2)):
                if tuple(t.shape) != expect[part]:
                    raise bad(
                        f"layer{layer}.{side}.{part} has shape {tuple(t.shape)}, expected {expect[part]}"
                    )


def cached_weights(path: str) -> tuple[dict[int, LayerWeights], dict[str, str]]:
    """:func:`load_hash_weights`, memoised on (path, modification time, size)."""
    return cached_load(load_hash_weights, path)


def check_weights_fit(params: dict, model) -> None:
    """``check_model`` hook: the weights file (if one is set) was made for ``model``'s
    architecture (see :func:`maskgraph.ops.zoo.model_fit.check_model`)."""
    from .model_fit import check_model

    path = params["weights"]
    if path is None:
        return  # prepare names the missing file
    per_layer, info = cached_weights(path)
    first = per_layer[min(per_layer)]
    shapes = {
        "num_hidden_layers": max(per_layer) + 1,
        "num_attention_heads": first["query.w1"].shape[0],
        "num_key_value_heads": first["key.w1"].shape[0],
        "head_dim": first["key.w1"].shape[1],
    }
    check_model(path, info, model, shapes)


def random_hash_weights(
    num_layers: int, hq: int, hkv: int, d: int, bits: int, hidden: int, seed: int = 0
) -> dict[int, LayerWeights]:
    """Random (untrained) weights in the file's layout, for tests and smoke runs."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[int, LayerWeights] = {}
    for layer in range(num_layers):
        w: LayerWeights = {}
        for side, h in (("query", hq), ("key", hkv)):
            w[f"{side}.w1"] = torch.randn(h, d, hidden, generator=gen) / d**0.5
            w[f"{side}.b1"] = torch.randn(h, hidden, generator=gen) * 0.1
            w[f"{side}.w2"] = torch.randn(h, hidden, bits, generator=gen) / hidden**0.5
            w[f"{side}.b2"] = torch.randn(h, bits, generator=gen) * 0.1
        out[layer] = w
    return out


# ----- signatures ---------------------------------------------------------------------------------
def hash_bits(x: torch.Tensor, w1, b1, w2, b2) -> torch.Tensor:
    """Per-head MLP sign bits: x (B, H, n, D), w1 (H, D, h), b1 (H, h), w2 (H, h, bits),
    b2 (H, bits) -> bool (B, H, n, bits)."""
    hid = F.silu(torch.einsum("bhnd,hdk->bhnk", x.float(), w1) + b1.unsqueeze(1))
    return (torch.einsum("bhnk,hkc->bhnc", hid, w2) + b2.unsqueeze(1)) > 0


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """bool (…, nbits) -> int32 (…, ceil(nbits / 32)), 32 bits per word; bit j of a word is
    bit j of its two's-complement int32 (bit 31 set = negative)."""
    n = bits.shape[-1]
    words = -(-n // WORD_BITS)
    padded = F.pad(bits.long(), (0, words * WORD_BITS - n))
    weights = torch.bitwise_left_shift(
        torch.ones(WORD_BITS, dtype=torch.int64, device=bits.device),
        torch.arange(WORD_BITS, device=bits.device),
    )
    unsigned = (padded.view(*bits.shape[:-1], words, WORD_BITS) * weights).sum(-1)
    return torch.where(unsigned >= 2**31, unsigned - 2**32, unsigned).to(torch.int32)


def _popcount16(x: torch.Tensor) -> torch.Tensor:
    """Set bits of values in [0, 2**16) (SWAR; no intermediate leaves [0, 2**16))."""
    x = x - ((x >> 1) & 0x5555)
    x = (x & 0x3333) + ((x >> 2) & 0x3333)
    x = (x + (x >> 4)) & 0x0F0F
    return (x + (x >> 8)) & 0x1F


def popcount32(x: torch.Tensor) -> torch.Tensor:
    """Set bits among the low 32 bits of each int32 or int64 value (two 16-bit halves, so
    no signed arithmetic overflows)."""
    return _popcount16(x & 0xFFFF) + _popcount16((x >> 16) & 0xFFFF)


#: Rows (queries or new keys per head) up to which :func:`signature_words` runs the MLP and
#: packs its bits in one Triton launch (decode) instead of torch's products and packing (six
#: kernels).
WORDS_KERNEL_ROWS = 16
#: Warps per program of that kernel (4 is faster than 8).
WORDS_WARPS = 4
#: Most elements of one (D, hidden units) or (hidden units, bits) weight tile of that kernel:
#: D = 128 and 128 hidden units are read in one step (smaller tiles make dependent rounds of
#: loads); 1024 bits take 16 units a step.
WORDS_TILE = 16384


def signature_words(x: torch.Tensor, w1, b1, w2, b2) -> torch.Tensor:
    """The packed signatures (B, H, n, W) int32 of x (B, H, n, D): ``pack_bits(hash_bits(…))``,
    by one Triton kernel (:func:`_hash_words`) where Triton runs and n ≤ WORDS_KERNEL_ROWS
    (float32 in another order of sums: a unit within rounding of 0 may take the other sign)."""
    if usable(x.device) and x.shape[2] <= WORDS_KERNEL_ROWS:
        return _hash_words(x, w1, b1, w2, b2)
    return pack_bits(hash_bits(x, w1, b1, w2, b2))


@torch.library.custom_op("maskgraph::hash_words", mutates_args=())
def _hash_words(
    x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor
) -> torch.Tensor:
    """x (B, H, n, D) -> (B, H, n, W) int32 (Triton, one program per row)."""
    b, h, n, d = x.shape
    hidden, bits = w1.shape[-1], w2.shape[-1]
    words = -(-bits // WORD_BITS)
    out = torch.empty(b, h, n, words, device=x.device, dtype=torch.int32)
    if x.stride(-1) != 1:
        x = x.contiguous()
    dp, bp = max(16, 1 << (d - 1).bit_length()), max(32, 1 << (bits - 1).bit_length())
    jitted(HASHATTENTION, "hash_words")[(b * h * n,)](
        x, w1.contiguous(), b1.contiguous(), w2.contiguous(), b2.contiguous(), out,
        n, h, d, hidden, bits, words, *x.stride()[:3],
        DP=dp, HB=min(max(16, 1 << (hidden - 1).bit_length()), max(16, WORDS_TILE // max(dp, bp))),
        BP=bp, num_warps=WORDS_WARPS, **pdl(x.device, b * h * n),
    )  # fmt: skip
    return out


@_hash_words.register_fake
def _(x, w1, b1, w2, b2):
    return x.new_empty(*x.shape[:3], -(-w2.shape[-1] // WORD_BITS), dtype=torch.int32)


def key_signatures(keys: torch.Tensor, _values, w1, b1, w2, b2) -> tuple[torch.Tensor]:
    """The packed signatures (B, H, n, W) int32 of keys (B, H, n, D), as a 1-tuple (the
    encoder :func:`maskgraph.static_keys.row_caches` takes)."""
    return (signature_words(keys, w1, b1, w2, b2),)


def prepare_hashattention(
    keys, values, params, slot, layer_idx, static: StaticKeys | None = None
) -> dict[str, torch.Tensor]:
    """Load this layer's weights; key signatures (B, Hkv, K, W) int32 cached, appended per step
    (rewritten in place for a static buffer: :func:`maskgraph.static_keys.row_caches`).

    Returns ``key_words`` and the query MLP ``qw1, qb1, qw2, qb2`` on the keys' device.
    Raises CalibrationError when no/invalid weights are given or they do not fit.
    """
    path = params["weights"]
    if path is None:
        raise CalibrationError(f"HashAttention needs trained hash weights; {HOW_TO_CALIBRATE}")
    per_layer, info = cached_weights(path)
    bits = params["hat_bits"]
    if int(info["hat_bits"]) != bits:
        raise CalibrationError(
            f"{path}: weights make {info['hat_bits']} bits but hat_bits={bits}; set hat_bits to "
            f"{info['hat_bits']} or calibrate again"
        )
    if layer_idx not in per_layer:
        raise CalibrationError(
            f"{path}: no weights for layer {layer_idx} (file has layers {sorted(per_layer)}); "
            f"{HOW_TO_CALIBRATE}"
        )
    config = (os.path.abspath(path), os.stat(path).st_mtime_ns, bits, layer_idx)
    w = slot.get("weights")
    if slot.get("config") != config or next(iter(w.values())).device != keys.device:
        w = {name: t.to(keys.device) for name, t in per_layer[layer_idx].items()}
        slot.clear()
        slot.update(weights=w, config=config)
    b, h, k, d = keys.shape
    if tuple(w["key.w1"].shape[:2]) != (h, d):
        raise CalibrationError(
            f"{path}: layer {layer_idx} key weights are for (Hkv, D)={tuple(w['key.w1'].shape[:2])}, "
            f"the keys have {(h, d)}"
        )
    words = slot.get("key_words")
    stale = words is not None and (words.shape[:2] != (b, h) or words.device != keys.device)
    side = tuple(w[f"key.{p}"] for p in PARTS)
    (words,) = row_caches(slot, ["key_words"], keys, values, key_signatures, stale, static, side)
    q = [w[f"query.{p}"] for p in PARTS]
    return {"key_words": words, "qw1": q[0], "qb1": q[1], "qw2": q[2], "qb2": q[3]}


def hashattention_sparse_scores(env, prep, *, weights=None, hat_bits) -> EstimatedScores:
    """Agreeing bits (B, Hq, Qc, K) float32 from packed key signatures; −inf where the
    attention mask forbids a key. Blocks of one key."""
    kw = prep["key_words"]
    b, hkv, k, nw = kw.shape
    qw = query_words(env, prep).reshape(b, hkv, (env.Hq // hkv) * env.Q, 1, nw)
    differ = popcount32(torch.bitwise_xor(qw, kw.unsqueeze(2))).sum(-1)
    scores = (hat_bits - differ).float().view(b, env.Hq, env.Q, k)
    return EstimatedScores(env.forbid(scores), 1)


#: Keys per program of the grouped score kernel.
HASH_BLOCK = 1024
#: Most query heads the grouped score kernel compares with a block of keys at once (a (heads,
#: block) tile; larger groups take several rounds: 8 heads × 2048 keys needed 251 registers a
#: thread on sm_90, 4 heads 128).
GROUP_CHUNK = 4


def query_words(env, prep) -> torch.Tensor:
    """The queries' packed signatures (B, Hq, Q, W) int32."""
    if prep["qw1"].shape[0] != env.Hq or prep["qw1"].shape[1] != env.D:
        raise CalibrationError(
            f"hash weights are for (Hq, D)={tuple(prep['qw1'].shape[:2])}, queries have {(env.Hq, env.D)}"
        )
    return signature_words(env.queries, prep["qw1"], prep["qb1"], prep["qw2"], prep["qb2"])


def _launch_group_scores(
    query: torch.Tensor,
    keys: torch.Tensor,
    heads: int,
    hat_bits: int,
    block: int,
    nb: int = 0,
    exclude=None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The scores (B, heads, Q, K) float32 — heads = Hkv: the max over each KV group's query
    heads; heads = Hq: each query head's own — in programs of ``block`` keys and, with ``nb``
    bins, each block's bounded top-k histogram (B·heads·Q, K / block, nb) int32. ``mask``:
    an additive (B|1, heads|1, Q|1, K) attention mask (keys contiguous) the kernel applies:
    −inf scores, bin 0."""
    from ...lowering.keymask import mask_strides
    from ...lowering.topk import exclusion_args

    b, hq, q, nw = query.shape
    k = keys.shape[2]
    out = torch.empty(b, heads, q, k, device=keys.device, dtype=torch.float32)
    grid = (b * heads * q, -(-k // block))
    hist = torch.empty(grid[0], grid[1], nb, device=keys.device, dtype=torch.int32) if nb else None
    ex, nex = exclusion_args(exclude)
    group = hq // heads
    jitted(HASHATTENTION, "hash_group_scores")[grid](
        query.contiguous(), keys.contiguous(), out, out if hist is None else hist, out if mask is None else mask,
        k, q, heads, group, heads // keys.shape[1], nw, hat_bits, *mask_strides(mask), *ex,
        BLOCK=block, HC=min(GROUP_CHUNK, max(2, 1 << (group - 1).bit_length())), NB=nb, NEX=nex,
        HW_POPC=not interpreting(), HAS_AM=mask is not None, **pdl(keys.device, grid[0] * grid[1]),
    )  # fmt: skip
    return out, hist


@torch.library.custom_op("maskgraph::hash_group_scores", mutates_args=())
def _hash_group_scores(
    query: torch.Tensor, keys: torch.Tensor, heads: int, hat_bits: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """query (B, Hq, Q, W), keys (B, Hkv, K, W) int32 -> (B, heads, Q, K) float32 (Triton;
    heads Hkv or Hq, ``mask`` applied: see :func:`_launch_group_scores`)."""
    return _launch_group_scores(query, keys, heads, hat_bits, HASH_BLOCK, mask=mask)[0]


@_hash_group_scores.register_fake
def _(query, keys, heads, hat_bits, mask=None):
    return keys.new_empty(query.shape[0], heads, query.shape[2], keys.shape[2], dtype=torch.float32)


@torch.library.custom_op("maskgraph::hash_group_scores_hist", mutates_args=())
def _hash_group_scores_hist(
    query: torch.Tensor,
    keys: torch.Tensor,
    heads: int,
    hat_bits: int,
    seg: int,
    nb: int,
    exclude: list[int] | None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """As ``hash_group_scores``, in programs of ``seg`` keys that also write the bounded top-k's
    histogram of their keys (``nb`` bins; the keys of the prior's runs ``exclude`` and those
    ``mask`` forbids in bin 0): (scores (B, heads, Q, K) float32, histograms
    (B·heads·Q, K / seg, nb) int32)."""
    out, hist = _launch_group_scores(query, keys, heads, hat_bits, seg, nb, exclude, mask)
    return out, hist


@_hash_group_scores_hist.register_fake
def _(query, keys, heads, hat_bits, seg, nb, exclude, mask=None):
    b, q, k = query.shape[0], query.shape[2], keys.shape[2]
    out = keys.new_empty(b, heads, q, k, dtype=torch.float32)
    return out, keys.new_empty(b * heads * q, -(-k // seg), nb, dtype=torch.int32)


def hashattention_group_scores(
    env, prep, *, weights=None, hat_bits, per_head: bool = False
) -> EstimatedScores | None:
    """The max over each KV group's query heads of :func:`hashattention_sparse_scores`:
    (B, Hkv, Qc, K) float32, −inf where forbidden (the mask must be the same for every head),
    in one Triton kernel (no per-query-head scores written); None where Triton cannot run.
    Returned as a function making them (launched only where used), with ``histogram``: the
    same scores with the bounded top-k's histograms, made by the same kernel (None where the
    kernel cannot apply the attention mask, which is then applied in torch), no ranges, and
    whether the kernel applied the mask. ``per_head``: each query head's own scores (B, Hq, Qc, K) by the
    same kernel (any attention mask)."""
    from ...lowering.keymask import kernel_mask

    kw = prep["key_words"]
    if not usable(kw.device):
        return None
    qw = query_words(env, prep)
    heads = env.Hq if per_head else env.Hkv
    applied = kernel_mask(env, per_head)
    if applied is None:
        return EstimatedScores(lambda: env.forbid(_hash_group_scores(qw, kw, heads, hat_bits)), 1)
    (mask,) = applied

    def with_histogram(exclude: list | None, seg: int, nb: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _hash_group_scores_hist(qw, kw, heads, hat_bits, seg, nb, exclude, mask)

    return EstimatedScores(
        lambda: _hash_group_scores(qw, kw, heads, hat_bits, mask), 1, histogram=with_histogram, masked=True
    )


@operator(
    "hashattention",
    family="estimator",
    output=PortType.SCORES,
    inputs=[Port("queries", PortType.QUERIES), Port("keys", PortType.KEYS)],
    params=[
        Param("weights", "path", doc="hash weights file (maskgraph calibrate hashattention)"),
        Param("hat_bits", "int", 32, "bits per signature (must match the weights)", low=1, high=1024),
    ],
    doc=(
        "Learned hash scores: per-head MLPs (Linear, SiLU, Linear) map queries and keys to "
        "hat_bits sign bits; a key scores the number of bits its signature shares with the "
        "query's (0..hat_bits). Key signatures are packed in State. −inf where the attention "
        "mask forbids a key. Shape (B, Hq, Q, K). Needs a weights file."
    ),
    paper="Desai et al., ICML 2025, HashAttention: Semantic Sparsity for Faster Inference",
    prepare=prepare_hashattention,
    check_model=check_weights_fit,
    calibration="weights",
    stateful=True,
    batch_rows=("key_words",),
    static_buffers=True,
    sparse=EstimatorLowering(
        hashattention_sparse_scores,
        group_scores=hashattention_group_scores,
        head_scores=functools.partial(hashattention_group_scores, per_head=True),
        integer=True,
        top=lambda params: params["hat_bits"],  # agreeing bits: 0..hat_bits
    ),
)
def hashattention(env, *, weights, hat_bits, prep) -> torch.Tensor:
    return hashattention_sparse_scores(env, prep, hat_bits=hat_bits).scores
