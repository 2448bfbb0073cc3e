"""MagicPIG: LSH sampling with collision-probability weights (Chen et al., ICLR 2025).

Keys are centred by their mean μ (softmax is unchanged: q·(k − μ) differs from q·k by a
constant per query) and made comparable to queries by the MIPS transform (Neyshabur & Srebro):

    k̃ = [k − μ, sqrt(M² − ‖k − μ‖²)] / M      (M = max ‖k − μ‖, so ‖k̃‖ = 1)
    q̃ = [q, 0] / ‖q‖

so that cos θ(q̃, k̃) = q·(k − μ) / (‖q‖·M) ranks keys as q·k does. SimHash draws ``lsh_l``
tables of ``lsh_k`` random hyperplanes; a key is sampled when its code equals the query's in
at least one table, which happens with probability

    p = 1 − (1 − (1 − θ/π)^lsh_k)^lsh_l,

and a sampled key is weighted 1/p. The planes (from ``seed``), μ, M and the key codes live in
the operator's State: new keys are encoded with the cached μ and M, so cached and new keys
share one normalisation; when a new key of a batch row is longer than its M (the transform
would be undefined), or the row's first key changed, that row's μ, M and codes are rebuilt
from its current keys (the other rows keep theirs: a row's result never depends on the
batch it is in, so beam search can move rows freely); when the cache shrank or its shape
changed, every row is rebuilt.
"""

from __future__ import annotations

import math

import torch

from ...errors import ParameterError
from ...registry import Param, operator
from ...types import PortType
from .sampling import ATTENTION_MASK, KEYS, PRIOR, QUERIES, SEED, mix32, residual_keys

#: Tables compared at once when looking for collisions (bounds the (…, K, tables) temporary).
TABLE_GROUP = 8

_REL_TOL = 1e-5


# ----- deterministic pieces -------------------------------------------------------------------
def mips_keys(keys: torch.Tensor, mean: torch.Tensor, max_norm: torch.Tensor) -> torch.Tensor:
    """The MIPS transform of keys: (B, H, n, D) -> (B, H, n, D + 1) float32 unit vectors.

    ``mean`` (B, H, 1, D) is subtracted first; ``max_norm`` (B, H) bounds every centred norm.
    """
    kc = keys.float() - mean
    norm = kc.norm(dim=-1, keepdim=True)
    big = max_norm.view(*max_norm.shape, 1, 1)
    extra = torch.sqrt(((big - norm) * (big + norm)).clamp_min(0.0))
    return torch.cat([kc, extra], dim=-1) / big


def mips_queries(queries: torch.Tensor) -> torch.Tensor:
    """The MIPS transform of queries: (…, D) -> (…, D + 1) float32 unit vectors [q, 0] / ‖q‖."""
    q = queries.float()
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return torch.cat([q, torch.zeros_like(q[..., :1])], dim=-1)


def collision_probability(cos: torch.Tensor, bits: int, tables: int) -> torch.Tensor:
    """P(at least one of ``tables`` SimHash tables of ``bits`` planes collides) at cosine ``cos``.

    ``1 − (1 − (1 − θ/π)^bits)^tables`` with θ = acos(cos), computed as
    ``−expm1(tables · log1p(−(1 − θ/π)^bits))`` so that small probabilities keep their digits.
    """
    theta = torch.acos(cos.clamp(-1.0, 1.0))
    one = (1.0 - theta / math.pi) ** bits
    return -torch.expm1(tables * torch.log1p(-one))


def pack_codes(proj: torch.Tensor, tables: int, bits: int) -> torch.Tensor:
    """Sign bits of projections (…, tables·bits) packed per table into int64 codes (…, tables)."""
    b = (proj > 0).to(torch.int64).unflatten(-1, (tables, bits))
    shifts = torch.arange(bits, device=proj.device, dtype=torch.int64)
    return (b << shifts).sum(dim=-1)


def collisions(q_codes: torch.Tensor, k_codes: torch.Tensor) -> torch.Tensor:
    """Whether any table collides: q_codes (B, H, M, L), k_codes (B, H, K, L) -> (B, H, M, K) bool."""
    tables = q_codes.shape[-1]
    hit = None
    for start in range(0, tables, TABLE_GROUP):
        q = q_codes[..., start : start + TABLE_GROUP].unsqueeze(-2)
        k = k_codes[..., start : start + TABLE_GROUP].unsqueeze(-3)
        part = (q == k).any(dim=-1)
        hit = part if hit is None else hit | part
    return hit


# ----- key side: planes, normalisation and codes, cached in State ------------------------------
def _planes(slot: dict, params: dict, heads: int, dim: int, layer_idx: int, device) -> torch.Tensor:
    """(heads, dim + 1, lsh_l·lsh_k) float32 Gaussian hyperplanes, drawn once per slot."""
    shape = (heads, dim + 1, params["lsh_l"] * params["lsh_k"])
    planes = slot.get("planes")
    if planes is not None and tuple(planes.shape) == shape and planes.device == device:
        return planes
    seed = params["seed"]
    if seed is None:
        seed = int(torch.randint(0, 2**32, ()).item())
    mixed = mix32(torch.tensor([(seed ^ int(layer_idx) * 0x9E3779B1) & 0xFFFFFFFF]))
    gen = torch.Generator().manual_seed(int(mixed.item()))
    planes = torch.randn(shape, generator=gen, dtype=torch.float32).to(device)
    slot.clear()
    slot["planes"] = planes
    return planes


def _fit(keys: torch.Tensor, center: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (B, H, 1, D) and max centred norm (B, H) of keys (B, H, K, D)."""
    k = keys.float()
    mean = k.mean(dim=2, keepdim=True) if center else torch.zeros_like(k[:, :, :1])
    max_norm = (k - mean).norm(dim=-1).amax(dim=-1).clamp_min(1e-12)
    return mean, max_norm


def _encode(keys, mean, max_norm, planes, params) -> torch.Tensor:
    proj = torch.matmul(mips_keys(keys, mean, max_norm), planes.unsqueeze(0))
    return pack_codes(proj, params["lsh_l"], params["lsh_k"])


def _rows_to_refit(slot: dict, keys: torch.Tensor) -> torch.Tensor | None:
    """(B,) bool: the batch rows whose cached codes cannot be extended to ``keys`` (B, H, K, D) —
    their first key changed, or a new key of some head lies outside the cached ball (longer
    than the max norm). None where nothing cached fits these keys at all (no codes, other
    B or H, fewer keys than cached, another dtype or device): every row is fitted afresh."""
    codes = slot.get("codes")
    b, h, k, _ = keys.shape
    first = slot.get("first")
    if codes is None or tuple(codes.shape[:2]) != (b, h) or codes.shape[2] > k:
        return None
    if first.dtype != keys.dtype or first.device != keys.device:
        return None
    new = keys[:, :, codes.shape[2] :].float()
    outside = (new - slot["mean"]).norm(dim=-1) > slot["max_norm"].unsqueeze(-1) * (1 + _REL_TOL)
    moved = first != keys[:, :, :1]
    return outside.flatten(1).any(dim=1) | moved.flatten(1).any(dim=1)


def magicpig_prepare(keys, values, params, slot, layer_idx) -> dict:
    """Key codes (B, H, K, L) int64, mean, max norm and query planes, kept up to date in ``slot``.

    Each batch row is its own: a row whose new keys fit its cached normalisation appends their
    codes; a row whose first key changed or whose new key is longer than its max norm refits
    its mean and max norm from all its keys and re-encodes them. Rows never see each other."""
    b, h, k, d = keys.shape
    planes = _planes(slot, params, h, d, layer_idx, keys.device)
    refit = _rows_to_refit(slot, keys)
    if refit is None:
        mean, max_norm = _fit(keys, params["center"])
        codes = _encode(keys, mean, max_norm, planes, params)
        slot.update(mean=mean, max_norm=max_norm, first=keys[:, :, :1].clone(), codes=codes)
    else:
        n = slot["codes"].shape[2]
        if n < k:
            new = _encode(keys[:, :, n:], slot["mean"], slot["max_norm"], planes, params)
            slot["codes"] = torch.cat([slot["codes"], new], dim=2)
        if bool(refit.any()):
            rows = refit.nonzero().squeeze(1)
            mean, max_norm = _fit(keys[rows], params["center"])
            codes = _encode(keys[rows], mean, max_norm, planes, params)
            # out of place: tensors handed to earlier calls keep what they held
            slot.update(
                mean=slot["mean"].index_put((rows,), mean),
                max_norm=slot["max_norm"].index_put((rows,), max_norm),
                first=slot["first"].index_put((rows,), keys[rows, :, :1]),
                codes=slot["codes"].index_put((rows,), codes),
            )
    return {
        "codes": slot["codes"],
        "mean": slot["mean"],
        "max_norm": slot["max_norm"],
        "planes_q": planes[:, :d].contiguous(),
    }


# ----- the operator ---------------------------------------------------------------------------
#: Most hyperplanes (lsh_l · lsh_k) per head: each is a (D + 1)-vector kept per layer, and every
#: query and key is projected on all of them.
MAX_PLANES = 1 << 14


def planes_fit(params: dict) -> None:
    """Graph-validation rule: lsh_l · lsh_k ≤ :data:`MAX_PLANES`."""
    planes = params["lsh_l"] * params["lsh_k"]
    if planes > MAX_PLANES:
        raise ParameterError(
            f"lsh_l · lsh_k = {params['lsh_l']} · {params['lsh_k']} = {planes} hyperplanes per head, more "
            f"than {MAX_PLANES}: each is kept per layer and every query and key is projected on all "
            "of them; lower lsh_l or lsh_k",
            param="lsh_l",
        )


@operator(
    "magicpig",
    family="sampler",
    output=PortType.MASK,
    inputs=[QUERIES, KEYS, ATTENTION_MASK, PRIOR],
    params=[
        Param(
            "lsh_l",
            "int",
            75,
            "number of SimHash tables (L); lsh_l · lsh_k at most 16384",
            low=1,
            high=1024,
            limit="each table keeps an int64 code per key and head in the State",
        ),
        Param(
            "lsh_k",
            "int",
            8,
            "hyperplanes (bits) per table (K)",
            low=1,
            high=62,
            limit="a table's code is one int64",
        ),
        Param("center", "bool", True, "subtract the keys' mean before hashing"),
        SEED,
    ],
    doc=(
        "MagicPIG LSH sampling of the residual keys (outside `prior`, allowed by the attention "
        "mask): SimHash of centred, MIPS-transformed queries and keys; a key is kept when any "
        "of `lsh_l` tables of `lsh_k` bits collides, with mask value p = 1 − (1 − (1 − θ/π)^K)^L "
        "(its collision probability, weight 1/p). Shape (B, Hq, Q, K)."
    ),
    paper="Chen et al., ICLR 2025, MagicPIG: LSH Sampling for Efficient LLM Generation",
    prepare=magicpig_prepare,
    check_params=planes_fit,
    deterministic=False,
    stateful=True,
    batch_rows=("codes", "mean", "max_norm", "first"),
)
def magicpig(env, *, prior=None, lsh_l, lsh_k, center, seed, prep) -> torch.Tensor:
    b, hkv, g, qc, d = env.B, env.Hkv, env.G, env.Q, env.D
    q = env.queries.reshape(b, hkv, g * qc, d).float()
    q_codes = pack_codes(torch.matmul(q, prep["planes_q"].unsqueeze(0)), lsh_l, lsh_k)
    hit = collisions(q_codes, prep["codes"])
    dots = torch.matmul(q, env.keys.float().transpose(-1, -2)) - torch.matmul(
        q, prep["mean"].transpose(-1, -2)
    )
    q_norm = q.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    cos = dots / (q_norm * prep["max_norm"].view(b, hkv, 1, 1))
    prob = collision_probability(cos, lsh_k, lsh_l).clamp_min(1e-30)
    kept = hit.view(b, env.Hq, qc, env.K) & residual_keys(env, prior)
    return torch.where(kept, prob.view(b, env.Hq, qc, env.K), 0.0)
