"""SOCKET: soft locality-sensitive hashing scores, weighted by value norms.

``tables`` hash tables of ``bits`` random hyperplanes each (r ~ N(0, I_D), drawn from
``seed``). A key is hashed hard: its bucket in table t is the sign pattern of <k, r_{t,p}>.
A query is hashed softly: with z_{t,p} = <q/‖q‖, r_{t,p}> (≈ N(0, 1) whatever D), the
probability that it falls in bucket c of table t is

    P_t(c | q) = Π_p σ(±z_{t,p} / tau)   (+ where bit p of c is 1, − where it is 0)

and key j scores ``‖v_j‖ · mean_t P_t(bucket_t(k_j) | q)``: the chance that q and k_j collide,
times how much k_j's value can move the output. Scores are a ranking (positive), not logits.
Key bucket codes and value norms are cached in State.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import ParameterError
from ...lowering import EstimatedScores, EstimatorLowering
from ...registry import Param, Port, operator
from ...static_keys import StaticKeys, row_caches
from ...types import PortType


def hyperplanes(tables: int, bits: int, d: int, seed: int) -> torch.Tensor:
    """Gaussian hyperplanes (tables, bits, d) float32, deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(tables, bits, d, generator=gen)


def bucket_codes(x: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
    """Hard hash: x (B, H, n, D), planes (L, P, D) -> bucket per table (B, H, n, L) int64."""
    side = torch.einsum("bhnd,lpd->bhnlp", x.float(), planes) > 0
    shifts = torch.arange(planes.shape[1], device=x.device)
    return (side.long() << shifts).sum(-1)


def bucket_bits(bits: int, device) -> torch.Tensor:
    """(2**bits, bits) float32: bit p of every bucket code c."""
    codes = torch.arange(2**bits, device=device)
    return ((codes.unsqueeze(-1) >> torch.arange(bits, device=device)) & 1).float()


def socket_rows(
    keys: torch.Tensor, values: torch.Tensor, planes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucket codes (B, H, n, L) of keys and norms (B, H, n) of values (B, H, n, D)."""
    return bucket_codes(keys, planes), values.float().norm(dim=-1)


def prepare_socket(
    keys, values, params, slot, layer_idx, static: StaticKeys | None = None
) -> dict[str, torch.Tensor]:
    """Key bucket codes ``codes`` (B, Hkv, K, L) int64 and value norms ``vnorm`` (B, Hkv, K)
    float32, appended per step (rewritten in place for a static buffer); ``planes`` (L, P, D)
    and ``bucket_bits`` (2**P, P)."""
    tables, bits, seed = params["tables"], params["bits"], params["seed"]
    b, h, k, d = keys.shape
    config = (tables, bits, seed, d)
    if slot.get("config") != config or slot.get("planes") is None:
        slot.clear()
        slot.update(planes=hyperplanes(tables, bits, d, seed).to(keys.device), config=config)
    planes = slot["planes"] = slot["planes"].to(keys.device)  # moved once, not per call
    codes = slot.get("codes")
    stale = codes is not None and (codes.shape[:2] != (b, h) or codes.device != keys.device)

    # eager rows: inductor's norm differs from torch's in the last bit, which can decide ties
    new_codes, new_norm = row_caches(
        slot, ["codes", "vnorm"], keys, values, socket_rows, stale, static, (planes,), compiled=False
    )
    return {
        "codes": new_codes,
        "vnorm": new_norm,
        "planes": planes,
        "bucket_bits": bucket_bits(bits, keys.device),
    }


def socket_sparse_scores(env, prep, *, tables, bits, tau, seed) -> EstimatedScores:
    """‖v_j‖·mean_t P_t(bucket_t(j) | q) (B, Hq, Qc, K) float32 from bucket codes and value
    norms only; −inf where the attention mask forbids a key. Blocks of one key."""
    codes, vnorm, planes, table_bits = prep["codes"], prep["vnorm"], prep["planes"], prep["bucket_bits"]
    b, hkv, k, _ = codes.shape
    gq = (env.Hq // hkv) * env.Q
    q = F.normalize(env.queries.float(), dim=-1).reshape(b, hkv, gq, env.D)
    z = torch.einsum("bhqd,lpd->bhqlp", q, planes) / tau
    log_prob = F.logsigmoid(z) @ table_bits.T + F.logsigmoid(-z) @ (1 - table_bits).T
    prob = log_prob.exp()  # (B, Hkv, GQ, L, 2**P)
    total = torch.zeros(b, hkv, gq, k, device=q.device)
    for t in range(tables):
        idx = codes[:, :, :, t].unsqueeze(2).expand(b, hkv, gq, k)
        total = total + torch.gather(prob[:, :, :, t], -1, idx)
    scores = (total / tables) * vnorm.unsqueeze(2)
    return EstimatedScores(env.forbid(scores.view(b, env.Hq, env.Q, k)), 1)


#: Most soft-bucket probabilities (tables · 2**bits) per query and head in one call.
MAX_BUCKETS = 1 << 18


def buckets_fit(params: dict) -> None:
    """Graph-validation rule: tables · 2**bits ≤ :data:`MAX_BUCKETS`."""
    buckets = params["tables"] * 2 ** params["bits"]
    if buckets > MAX_BUCKETS:
        raise ParameterError(
            f"tables · 2**bits = {params['tables']} · 2**{params['bits']} = {buckets} soft buckets per query "
            f"and head, more than {MAX_BUCKETS}: a call holds a probability for each; lower tables or bits",
            param="tables",
        )


@operator(
    "socket",
    family="estimator",
    output=PortType.SCORES,
    inputs=[
        Port("queries", PortType.QUERIES),
        Port("keys", PortType.KEYS),
        Port("values", PortType.VALUES),
    ],
    params=[
        Param(
            "tables",
            "int",
            32,
            "hash tables (L); tables · 2**bits at most 262144",
            low=1,
            high=1024,
            limit="each table keeps an int64 code per key and head in the State and is one step "
            "of the generated code",
        ),
        Param(
            "bits",
            "int",
            8,
            "hyperplanes per table (2**bits buckets)",
            low=1,
            high=16,
            limit="every query holds a probability for each of the 2**bits buckets of every table",
        ),
        Param("tau", "float", 0.5, "temperature of the soft query hash", low=0.0, low_open=True),
        Param("seed", "int", 0, "seed of the hyperplanes", low=-(2**53), high=2**53),
    ],
    doc=(
        "Soft-LSH scores: keys hard-hashed, queries soft-hashed (sigmoid(z/tau) per plane) over "
        "`tables` tables of `bits` random hyperplanes; a key scores ‖v‖ times the mean over "
        "tables of the probability that the query lands in the key's bucket (a ranking score "
        "in [0, ‖v‖]). −inf where the attention mask forbids a key. Shape (B, Hq, Q, K)."
    ),
    paper="SOCKET: soft collision kernel estimation for sparse attention (soft LSH)",
    prepare=prepare_socket,
    check_params=buckets_fit,
    stateful=True,
    batch_rows=("codes", "vnorm"),
    static_buffers=True,
    sparse=EstimatorLowering(socket_sparse_scores),
)
def socket(env, *, tables, bits, tau, seed, prep) -> torch.Tensor:
    return socket_sparse_scores(env, prep, tables=tables, bits=bits, tau=tau, seed=seed).scores
