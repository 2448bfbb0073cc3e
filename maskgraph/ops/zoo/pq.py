"""PQCache: product quantisation of the keys, scores from centroid lookups (Zhang et al., SIGMOD 2025).

Each key (D channels) is cut into ``pq_group_factor`` sub-vectors of D / pq_group_factor
channels; per (batch, KV head, sub-space) a k-means codebook of ``2**pq_bits`` centroids is fit
on the keys of the first call, and every key is stored as one code per sub-space. A query
scores key j by

    scaling · Σ_s <q_s, centroid_s[code_s(j)]>

(one lookup table per query and sub-space, then a gather per key). Codes are int64, exact for
every pq_bits ≤ 16.
"""

from __future__ import annotations

import torch

from ...errors import NotSupportedError, ShapeError
from ...lowering import EstimatedScores, EstimatorLowering
from ...registry import Param, Port, operator
from ...static_keys import StaticKeys, rewrite_rows
from ...types import PortType

#: Elements of one (rows, keys, centroids) distance block during k-means.
_ASSIGN_ELEMENTS = 1 << 24
#: Elements of one block of fixed-point vectors summed by :func:`cluster_sums`.
_SUM_ELEMENTS = 1 << 24


# ----- k-means ------------------------------------------------------------------------------------
def _similarity(x: torch.Tensor, c: torch.Tensor, metric: str) -> torch.Tensor:
    """(N, n, ds) x (N, C, ds) -> (N, n, C): higher = closer (−squared distance or inner product)."""
    ip = x @ c.transpose(-1, -2)
    if metric == "ip":
        return ip
    return 2 * ip - (c * c).sum(-1).unsqueeze(1) - (x * x).sum(-1, keepdim=True)


def assign(x: torch.Tensor, centroids: torch.Tensor, metric: str) -> torch.Tensor:
    """Nearest centroid per vector: x (N, n, ds), centroids (N, C, ds) -> codes (N, n) int64."""
    n, c = x.shape[1], centroids.shape[1]
    step = max(1, _ASSIGN_ELEMENTS // max(1, x.shape[0] * c))
    parts = [_similarity(x[:, i : i + step], centroids, metric).argmax(-1) for i in range(0, n, step)]
    return torch.cat(parts, dim=1) if parts else x.new_zeros(x.shape[0], 0, dtype=torch.int64)


def fixed_point_scale(x: torch.Tensor) -> torch.Tensor:
    """Per row of x (N, n, ds) float32 the power of two (N, 1, 1) float64 that turns every
    entry into an int64 with ``n · |x| · scale < 2**62``: n entries then sum exactly."""
    if not torch.isfinite(x).all():
        raise ValueError("pqcache: the keys hold inf or NaN; k-means needs finite keys")
    top = x.abs().amax(dim=(1, 2), keepdim=True).double()
    exponent = torch.frexp(top).exponent  # top < 2**exponent
    room = 61 - max(1, x.shape[1]).bit_length()
    return torch.ldexp(torch.ones_like(top), (room - exponent).clamp(max=1000))


def cluster_sums(
    x: torch.Tensor, codes: torch.Tensor, num_centroids: int, scale: torch.Tensor
) -> torch.Tensor:
    """Sum of the vectors of each cluster: x (N, n, ds) float32, codes (N, n) int64 ->
    (N, C, ds) float32, the same bits on every run and device order: the vectors are rounded
    to int64 fixed point (``scale`` from :func:`fixed_point_scale`: about 2**-44 of the row's
    largest entry) and added as integers, whose sum no order of the (atomic) adds changes."""
    big, n, ds = x.shape
    sums = torch.zeros(big, num_centroids, ds, device=x.device, dtype=torch.int64)
    step = max(1, _SUM_ELEMENTS // max(1, big * ds))
    for i in range(0, n, step):
        q = torch.round(x[:, i : i + step].double() * scale).to(torch.int64)
        sums.scatter_add_(1, codes[:, i : i + step].unsqueeze(-1).expand(-1, -1, ds), q)
    return (sums.double() / scale).float()


def kmeans(
    x: torch.Tensor, num_centroids: int, iters: int, metric: str, seed: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Lloyd k-means.

    x (N, n, ds) float32 -> (centroids (N, C, ds), codes (N, n) int64). Centroids start at
    ``C`` distinct data points drawn with ``seed`` (every point, then repeats, when C > n), so
    with C ≥ n every point is its own centroid. An empty cluster keeps its centroid.
    Deterministic for a given seed.
    """
    big, n, ds = x.shape
    if seed is None:
        seed = int(torch.randint(2**62, ()).item())
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    if num_centroids > n:
        extra = torch.randint(n, (num_centroids - n,), generator=gen)
        order = torch.cat([order, extra])
    centroids = x[:, order[:num_centroids].to(x.device)].clone()
    scale = fixed_point_scale(x) if iters else None
    for _ in range(iters):
        codes = assign(x, centroids, metric)
        sums = cluster_sums(x, codes, num_centroids, scale)
        counts = torch.zeros(big, num_centroids, device=x.device).scatter_add_(
            1, codes, torch.ones_like(codes, dtype=torch.float32)
        )
        centroids = torch.where(counts.unsqueeze(-1) > 0, sums / counts.clamp_min(1).unsqueeze(-1), centroids)
    return centroids, assign(x, centroids, metric)


# ----- key side -----------------------------------------------------------------------------------
def _subvectors(keys: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, H, n, D) -> (B·H·groups, n, D / groups) float32."""
    b, h, n, d = keys.shape
    if d % groups:
        raise ShapeError(f"pq_group_factor={groups} does not divide the head dim D={d}")
    ds = d // groups
    return keys.float().view(b, h, n, groups, ds).permute(0, 1, 3, 2, 4).reshape(-1, n, ds)


def pq_codes(keys: torch.Tensor, _values, centroids: torch.Tensor, metric: str) -> tuple[torch.Tensor]:
    """Codes (B, H, n, M) int64 of keys (B, H, n, D) under ``centroids`` (B, H, M, C, D/M), as a
    1-tuple (the encoder :func:`maskgraph.static_keys.rewrite_rows` takes)."""
    b, h, m, c, ds = centroids.shape
    n = keys.shape[2]
    flat = assign(_subvectors(keys, m), centroids.reshape(b * h * m, c, ds), metric)
    return (flat.view(b, h, m, n).transpose(-1, -2),)


def fit(keys: torch.Tensor, params: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Codebooks fit on keys (B, H, n, D) and their codes: (centroids (B, H, M, C, D/M),
    codes (B, H, n, M))."""
    m, bits = params["pq_group_factor"], params["pq_bits"]
    b, h, n, d = keys.shape
    cent, flat = kmeans(
        _subvectors(keys, m), 2**bits, params["kmeans_iter"], params["metric"], params["seed"]
    )
    return cent.view(b, h, m, 2**bits, d // m), flat.view(b, h, m, n).transpose(-1, -2).contiguous()


def _config(params: dict) -> tuple:
    return (
        params["pq_group_factor"],
        params["pq_bits"],
        params["kmeans_iter"],
        params["metric"],
        params["seed"],
    )


def _stale(cent, keys: torch.Tensor, m: int, slot: dict, config: tuple) -> bool:
    b, h, _, d = keys.shape
    return (
        cent is None
        or cent.shape[:2] != (b, h)
        or cent.shape[-1] * m != d
        or cent.device != keys.device
        or slot.get("config") != config
    )


def prepare_pq(
    keys, values, params, slot, layer_idx, static: StaticKeys | None = None
) -> dict[str, torch.Tensor]:
    """Codebooks fit on the first call's keys; later keys encoded incrementally.

    keys (B, Hkv, K, D). Returns ``centroids`` (B, Hkv, M, C, D/M) float32 and ``codes``
    (B, Hkv, K, M) int64 (M = pq_group_factor, C = 2**pq_bits). When K shrinks (a new
    sequence) or the shape or parameters change, the codebooks are refit. A static buffer
    (``static``): see :func:`prepare_pq_static`.
    """
    if static is not None:
        return prepare_pq_static(keys, values, params, slot, static)
    m = params["pq_group_factor"]
    config = _config(params)
    k = keys.shape[2]
    cent, codes, n = slot.get("centroids"), slot.get("codes"), slot.get("n") or 0
    fresh = _stale(cent, keys, m, slot, config) or k < n or slot.get("static") is not None
    if fresh:
        cent, codes = fit(keys, params)
        start = 0
    elif k == n:  # called again on the same keys (e.g. a second pass over one step)
        start = n
    else:
        start = n
        (new,) = pq_codes(keys[:, :, n:], None, cent, params["metric"])
        codes = torch.cat([codes, new], dim=2)
    slot.update(centroids=cent, codes=codes, n=k, static=None, config=config, updated=(start, k))
    return {"centroids": cent, "codes": codes}


def prepare_pq_static(keys, values, params, slot, static: StaticKeys) -> dict[str, torch.Tensor]:
    """Codebooks and codes of a static buffer ``keys`` (B, Hkv, Kmax, D) holding
    ``static.num_keys`` tokens. The first call fits the codebooks on its tokens alone, as the
    first call on growing keys does — which needs their count on the host: it is read there,
    once (that call cannot be recorded in a CUDA graph) — and encodes the tokens and, apart,
    the padding (never attended). Later calls encode only their new keys' rows, in place."""
    m = params["pq_group_factor"]
    config = _config(params)
    kmax = keys.shape[2]
    cent, codes = slot.get("centroids"), slot.get("codes")
    if _stale(cent, keys, m, slot, config) or slot.get("static") != kmax:
        if keys.is_cuda and torch.cuda.is_current_stream_capturing():
            raise NotSupportedError(
                "PQCache fits its codebooks on the first call over a static buffer, which reads "
                "the token count on the host: run one step before recording a CUDA graph"
            )
        n = int(static.num_keys)  # the one host read: the codebooks are fit on the tokens
        cent, codes = fit(keys[:, :, :n], params)
        if n < kmax:  # the padding, encoded apart (never attended)
            (tail,) = pq_codes(keys[:, :, n:], None, cent, params["metric"])
            codes = torch.cat([codes, tail], dim=2)
    else:
        rewrite_rows((codes,), keys, values, static, pq_codes, (cent, params["metric"]))
    slot.update(centroids=cent, codes=codes, n=None, static=kmax, config=config, updated=None)
    return {"centroids": cent, "codes": codes}


# ----- query side ---------------------------------------------------------------------------------
def pq_sparse_scores(env, prep, **params) -> EstimatedScores:
    """Scores scaling·Σ_s <q_s, centroid_s[code_s]> (B, Hq, Qc, K) float32, from codes and
    centroids only; −inf where the attention mask forbids a key. Blocks of one key."""
    cent, codes = prep["centroids"], prep["codes"]
    b, hkv, m, _, ds = cent.shape
    k = codes.shape[2]
    gq = (env.Hq // hkv) * env.Q
    q = env.queries.float().reshape(b, hkv, gq, m, ds)
    table = torch.einsum("bhqmd,bhmcd->bhmqc", q, cent)
    total = torch.zeros(b, hkv, gq, k, device=q.device)
    for s in range(m):
        idx = codes[:, :, :, s].unsqueeze(2).expand(b, hkv, gq, k)
        total = total + torch.gather(table[:, :, s], -1, idx)
    scores = (total * env.scaling).view(b, env.Hq, env.Q, k)
    return EstimatedScores(env.forbid(scores), 1)


@operator(
    "pq",
    family="estimator",
    output=PortType.SCORES,
    inputs=[Port("queries", PortType.QUERIES), Port("keys", PortType.KEYS)],
    params=[
        Param(
            "pq_group_factor",
            "int",
            2,
            "sub-vectors per key (must divide D)",
            low=1,
            high=1024,
            limit="the sub-vectors split the head dim D",
        ),
        Param(
            "pq_bits",
            "int",
            6,
            "bits per code: 2**pq_bits centroids per sub-space",
            low=1,
            high=16,
            limit="every key is compared with all 2**pq_bits centroids",
        ),
        Param(
            "kmeans_iter",
            "int",
            10,
            "Lloyd iterations of the k-means fit",
            low=0,
            high=1000,
            limit="each iteration compares every key with every centroid",
        ),
        Param("metric", "choice", "euclidean", "k-means assignment", choices=("euclidean", "ip")),
        Param("seed", "seed", 0, "seed of the centroid initialisation (null = random)"),
    ],
    doc=(
        "Product-quantised key scores: scaling·Σ_s <q_s, centroid_s[code_s(k)]> over "
        "pq_group_factor sub-vectors, codebooks of 2**pq_bits centroids fit by batched k-means "
        "on the first call (kept in State; later keys encoded incrementally). −inf where the "
        "attention mask forbids a key. Shape (B, Hq, Q, K)."
    ),
    paper="Zhang et al., SIGMOD 2025, PQCache: Product Quantization-based KVCache for Long Context LLM Inference",
    prepare=prepare_pq,
    stateful=True,
    batch_rows=("centroids", "codes"),
    static_buffers=True,
    sparse=EstimatorLowering(pq_sparse_scores),
)
def pq(env, *, pq_group_factor, pq_bits, kmeans_iter, metric, seed, prep) -> torch.Tensor:
    return pq_sparse_scores(env, prep).scores
