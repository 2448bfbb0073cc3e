"""HashAttention calibration: per-head MLPs whose sign bits rank keys as q·k does.

HashAttention (Desai et al., ICML 2025) maps queries and keys to ``hat_bits`` bits with small
learned functions and scores a key by the number of bits it shares with the query; the top
keys by that score are attended. Here each query head and each KV head gets an MLP
``D → hidden → hat_bits`` (SiLU between), bit = output > 0.

Training, per layer, on queries and keys captured from a model over some text:
  * candidates of query t are the keys a hash top-k would choose from in the shipped graphs:
    positions ``sink ≤ s ≤ t − local`` (sinks and the local window are kept anyway);
  * targets are the exact top-``top_k`` candidates by q·k;
  * the bit agreement is relaxed to ``Σ_b tanh(u_q,b)·tanh(u_k,b) / bits`` ∈ [−1, 1], and a
    sampled listwise loss (softmax with a learned temperature over the targets and random
    other candidates, cross-entropy on the targets) pushes the targets above the rest.
Inputs are standardised per head and channel during training; the standardisation is folded
into the first layer on export, so the saved MLPs read raw queries and keys.

Quality is the top-k recall on held-out windows: the share of the exact top-k that the top-k
by bit agreement finds, ties in agreement broken at random (computed in expectation).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import CalibrationError
from . import formats
from .capture import CapturedQK, capture_qk
from .text import encode, windows


@dataclass
class HashConfig:
    """Hyper-parameters of HashAttention calibration."""

    hat_bits: int = 32
    hidden: int = 128
    top_k: int = 32  # size of the exact top-k the hashes must find
    sink: int = 4  # first keys excluded from the candidates (kept by the sink operator)
    local: int = 64  # most recent keys excluded from the candidates (kept by the local window)
    steps: int = 600  # Adam steps per layer
    lr: float = 1e-3
    queries_per_step: int = 128
    negatives: int = 128  # random candidates per query in each step's sampled softmax
    hard_negatives: int = 32  # candidates ranked just below the top-k, added to each softmax
    eval_queries: int = 256  # held-out query positions per window for the recall
    held_out: float = 0.25  # share of windows held out (at least one)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hat_bits", "hidden", "top_k", "steps", "queries_per_step", "negatives", "eval_queries"):
            if getattr(self, name) < 1:
                raise CalibrationError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hard_negatives < 0:
            raise CalibrationError(f"hard_negatives must be >= 0, got {self.hard_negatives}")
        if self.sink < 0 or self.local < 1:
            raise CalibrationError(f"sink must be >= 0 and local >= 1, got {self.sink}, {self.local}")
        if not 0.0 < self.held_out < 1.0:
            raise CalibrationError(f"held_out must be in (0, 1), got {self.held_out}")


# --------------------------------------------------------------------------- hashing


def mlp_logits(x: torch.Tensor, mlp: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-head MLP outputs ``(H, N, bits)`` of inputs ``(H, N, D)`` (file-format weights)."""
    hidden = F.silu(torch.baddbmm(mlp["b1"][:, None], x, mlp["w1"]))
    return torch.baddbmm(mlp["b2"][:, None], hidden, mlp["w2"])


def group_scores(sq: torch.Tensor, sk: torch.Tensor) -> torch.Tensor:
    """``Σ_b sq·sk`` for query codes ``(Hq, P, bits)`` and key codes ``(Hkv, L, bits)``: ``(Hq, P, L)``.

    Query head h reads KV head h // G (no G-fold copy of the keys).
    """
    hq, p, bits = sq.shape
    hkv = sk.shape[0]
    grouped = sq.reshape(hkv, (hq // hkv) * p, bits)
    return torch.bmm(grouped, sk.transpose(1, 2)).reshape(hq, p, sk.shape[1])


def bit_agreement(queries: torch.Tensor, keys: torch.Tensor, weights: dict[str, dict]) -> torch.Tensor:
    """Number of equal bits ``(Hq, P, L)`` between queries ``(Hq, P, D)`` and keys ``(Hkv, L, D)``."""
    sq = torch.where(mlp_logits(queries, weights["query"]) > 0, 1.0, -1.0)
    sk = torch.where(mlp_logits(keys, weights["key"]) > 0, 1.0, -1.0)
    bits = sq.shape[-1]
    return (group_scores(sq, sk) + bits) / 2


# --------------------------------------------------------------------------- candidates and recall


def candidate_mask(query_pos: torch.Tensor, length: int, sink: int, local: int) -> torch.Tensor:
    """``(P, L)`` bool: key s is a candidate of the query at position t when ``sink ≤ s ≤ t − local``."""
    s = torch.arange(length)
    return (s[None, :] >= sink) & (s[None, :] <= query_pos[:, None] - local)


def eligible_positions(length: int, cfg: HashConfig) -> torch.Tensor:
    """Query positions with at least ``top_k + max(top_k, hard_negatives)`` candidates."""
    first = cfg.top_k + max(cfg.top_k, cfg.hard_negatives) + cfg.local + cfg.sink - 1
    if first >= length:
        raise CalibrationError(
            f"windows of {length} tokens are too short for top_k={cfg.top_k}, hard_negatives="
            f"{cfg.hard_negatives}, sink={cfg.sink}, local={cfg.local}: need more than {first} tokens per window"
        )
    return torch.arange(first, length)


def exact_topk(queries: torch.Tensor, keys: torch.Tensor, cand: torch.Tensor, k: int) -> torch.Tensor:
    """``(Hq, P, L)`` bool: the ``k`` candidates of largest q·k for queries ``(Hq,P,D)``, keys ``(Hkv,L,D)``."""
    logits = group_scores(queries, keys).masked_fill(~cand, float("-inf"))
    top = logits.topk(k, dim=-1).indices
    return torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, top, True)


def expected_recall(scores: torch.Tensor, target: torch.Tensor, cand: torch.Tensor, k: int) -> torch.Tensor:
    """Recall ``(Hq, P)`` of the top-``k`` of ``scores (Hq,P,L)`` among candidates against ``target``.

    Keys tied at the k-th score are chosen at random; the recall is its expectation.
    """
    s = scores.masked_fill(~cand, float("-inf"))
    kth = s.topk(k, dim=-1).values[..., -1:]
    above = (s > kth) & cand
    tied = (s == kth) & cand
    share = (k - above.sum(-1, keepdim=True)) / tied.sum(-1, keepdim=True)
    hits = (target & above).sum(-1) + (target & tied).sum(-1) * share[..., 0]
    return hits / k


# --------------------------------------------------------------------------- training


class HeadMLPs(torch.nn.Module):
    """One MLP ``D → hidden → bits`` per head, on standardised inputs ``(H, N, D)``."""

    def __init__(self, heads: int, dim: int, hidden: int, bits: int, generator: torch.Generator) -> None:
        super().__init__()

        def init(*shape: int, fan_in: int) -> torch.nn.Parameter:
            return torch.nn.Parameter(torch.randn(*shape, generator=generator) / math.sqrt(fan_in))

        self.w1 = init(heads, dim, hidden, fan_in=dim)
        self.b1 = torch.nn.Parameter(torch.zeros(heads, hidden))
        self.w2 = init(heads, hidden, bits, fan_in=hidden)
        self.b2 = torch.nn.Parameter(torch.zeros(heads, bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mlp_logits(x, {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2})

    def export(self, mean: torch.Tensor, std: torch.Tensor) -> dict[str, torch.Tensor]:
        """File-format weights reading raw inputs: the standardisation ``(x − mean)/std`` (H, D) folded in."""
        w1 = self.w1.detach() / std[:, :, None]
        b1 = self.b1.detach() - torch.einsum("hd,hdk->hk", mean, w1)
        return {"w1": w1, "b1": b1, "w2": self.w2.detach().clone(), "b2": self.b2.detach().clone()}


def _standardiser(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head and channel mean and std ``(H, D)`` of ``x (N, H, L, D)``."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1, x.shape[-1])
    return flat.mean(dim=1), flat.std(dim=1).clamp_min(1e-6)


def layer_targets(
    queries: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor, cfg: HashConfig
) -> torch.Tensor:
    """Exact top-(top_k + hard_negatives) candidate indices ``(N, Hq, E, top_k + hard_negatives)``,
    best first, of the queries at ``positions (E,)`` for windows ``queries (N, Hq, L, D)``,
    ``keys (N, Hkv, L, D)``."""
    cand = candidate_mask(positions, queries.shape[2], cfg.sink, cfg.local)
    out = []
    with torch.no_grad():
        for q_w, k_w in zip(queries, keys):
            logits = group_scores(q_w[:, positions], k_w).masked_fill(~cand, float("-inf"))
            out.append(logits.topk(cfg.top_k + cfg.hard_negatives, dim=-1).indices)
    return torch.stack(out)


def sample_negatives(
    pos: torch.Tensor, heads: int, cfg: HashConfig, generator: torch.Generator
) -> torch.Tensor:
    """``negatives`` uniform random candidates ``(heads, P, negatives)`` of the queries at ``pos (P,)``."""
    n_cand = (pos - cfg.local - cfg.sink + 1).clamp_min(1)
    u = torch.rand(heads, pos.numel(), cfg.negatives, generator=generator)
    return cfg.sink + (u * n_cand[None, :, None]).long()


def train_layer(
    queries: torch.Tensor, keys: torch.Tensor, cfg: HashConfig, *, generator: torch.Generator | None = None
) -> dict[str, dict[str, torch.Tensor]]:
    """Hash MLPs for one layer from training windows: queries ``(N, Hq, L, D)``, keys ``(N, Hkv, L, D)``.

    Each step takes ``queries_per_step`` query positions of one window; per query the softmax
    runs over its exact top-k and ``negatives`` random candidates (a sampled listwise loss).
    Returns ``{"query": mlp, "key": mlp}`` in file format (float32, reading raw inputs).
    """
    if queries.shape[1] % keys.shape[1]:
        raise CalibrationError(
            f"{queries.shape[1]} query heads is not a multiple of {keys.shape[1]} KV heads"
        )
    gen = generator or torch.Generator().manual_seed(cfg.seed)
    queries, keys = queries.float(), keys.float()
    n, hq, length, d = queries.shape
    hkv = keys.shape[1]
    positions = eligible_positions(length, cfg)
    targets = layer_targets(queries, keys, positions, cfg)
    q_mean, q_std = _standardiser(queries)
    k_mean, k_std = _standardiser(keys)
    q_net = HeadMLPs(hq, d, cfg.hidden, cfg.hat_bits, gen)
    k_net = HeadMLPs(hkv, d, cfg.hidden, cfg.hat_bits, gen)
    log_temp = torch.nn.Parameter(torch.tensor(math.log(8.0)))
    opt = torch.optim.Adam([*q_net.parameters(), *k_net.parameters(), log_temp], lr=cfg.lr)
    per_step = min(cfg.queries_per_step, positions.numel())
    for _ in range(cfg.steps):
        w = int(torch.randint(n, (1,), generator=gen))
        pick = torch.randperm(positions.numel(), generator=gen)[:per_step]
        pos, ranked = positions[pick], targets[w][:, pick]  # (P,), (Hq, P, k + hard)
        target = ranked[..., : cfg.top_k]
        negatives = torch.cat([ranked[..., cfg.top_k :], sample_negatives(pos, hq, cfg, gen)], dim=-1)
        target_mask = torch.zeros(hq, per_step, length, dtype=torch.bool).scatter_(-1, target, True)
        is_target = target_mask.gather(-1, negatives)
        tq = torch.tanh(q_net((queries[w][:, pos] - q_mean[:, None]) / q_std[:, None]))
        tk = torch.tanh(k_net((keys[w] - k_mean[:, None]) / k_std[:, None]))
        soft = group_scores(tq, tk) / cfg.hat_bits  # (Hq, P, L)
        soft = soft.gather(-1, torch.cat([target, negatives], dim=-1)) * log_temp.exp()
        drop = torch.cat([torch.zeros_like(target, dtype=torch.bool), is_target], dim=-1)
        logp = torch.log_softmax(soft.masked_fill(drop, float("-inf")), dim=-1)
        loss = -logp[..., : cfg.top_k].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {"query": q_net.export(q_mean, q_std), "key": k_net.export(k_mean, k_std)}


def random_layer(heads: int, kv_heads: int, dim: int, cfg: HashConfig, generator: torch.Generator) -> dict:
    """Untrained (random-initialised) hash MLPs of one layer, in file format: a baseline."""
    zero, one = torch.zeros(heads, dim), torch.ones(heads, dim)
    kzero, kone = torch.zeros(kv_heads, dim), torch.ones(kv_heads, dim)
    q_net = HeadMLPs(heads, dim, cfg.hidden, cfg.hat_bits, generator)
    k_net = HeadMLPs(kv_heads, dim, cfg.hidden, cfg.hat_bits, generator)
    return {"query": q_net.export(zero, one), "key": k_net.export(kzero, kone)}


@dataclass
class RecallReport:
    """Held-out top-k recall of one layer: by bit agreement and by chance (k / candidates)."""

    recall: float
    random: float


def evaluate_layer(
    weights: dict[str, dict[str, torch.Tensor]], queries: torch.Tensor, keys: torch.Tensor, cfg: HashConfig
) -> RecallReport:
    """Mean top-k recall over windows ``queries (N,Hq,L,D)``, ``keys (N,Hkv,L,D)``, heads and up to
    ``eval_queries`` evenly spaced eligible positions per window."""
    length = queries.shape[2]
    positions = eligible_positions(length, cfg)
    pick = torch.linspace(0, positions.numel() - 1, min(cfg.eval_queries, positions.numel())).round().long()
    pos = positions[pick]
    cand = candidate_mask(pos, length, cfg.sink, cfg.local)
    recalls, chance = [], (cfg.top_k / cand.sum(-1).double()).mean().item()
    with torch.no_grad():
        for q_w, k_w in zip(queries.float(), keys.float()):
            q = q_w[:, pos]
            target = exact_topk(q, k_w, cand, cfg.top_k)
            agreement = bit_agreement(q, k_w, weights)
            recalls.append(expected_recall(agreement, target, cand, cfg.top_k).mean())
    return RecallReport(float(torch.stack(recalls).mean()), chance)


# --------------------------------------------------------------------------- end to end


@dataclass
class HashCalibration:
    """Result of :func:`calibrate_hashattention`."""

    weights: formats.HashWeights
    reports: list[RecallReport]
    metadata: dict[str, Any]

    @property
    def recall(self) -> float:
        return sum(r.recall for r in self.reports) / len(self.reports)

    @property
    def random_recall(self) -> float:
        return sum(r.random for r in self.reports) / len(self.reports)

    def save(self, path: str | Path) -> Path:
        """Write the hash-weight file (format: :mod:`maskgraph.calibrate.formats`)."""
        return formats.save_hash_weights(path, self.weights, self.metadata)


def split_windows(n: int, held_out: float) -> tuple[slice, slice]:
    """(train, held-out) slices of ``n`` windows: the last ``max(1, round(n·held_out))`` are held out."""
    if n < 2:
        raise CalibrationError(
            f"need at least 2 windows (one to train, one held out), got {n}: raise --tokens"
        )
    held = min(n - 1, max(1, round(n * held_out)))
    return slice(0, n - held), slice(n - held, n)


def train_captured(captured: CapturedQK, cfg: HashConfig, *, progress: bool = False) -> tuple[list, list]:
    """Train and evaluate every layer of ``captured``: ``(weights per layer, RecallReport per layer)``."""
    from tqdm.auto import tqdm

    train, held = split_windows(captured.queries[0].shape[0], cfg.held_out)
    gen = torch.Generator().manual_seed(cfg.seed)
    weights, reports = [], []
    bar = tqdm(range(captured.num_layers), desc="hashattention", unit="layer", disable=not progress)
    for layer in bar:
        q, k = captured.queries[layer], captured.keys[layer]
        layer_weights = train_layer(q[train], k[train], cfg, generator=gen)
        report = evaluate_layer(layer_weights, q[held], k[held], cfg)
        bar.set_postfix(recall=f"{report.recall:.3f}", random=f"{report.random:.3f}")
        weights.append(layer_weights)
        reports.append(report)
    return weights, reports


def calibrate_hashattention(
    model: torch.nn.Module,
    tokenizer: Any,
    text: str,
    *,
    tokens: int = 4096,
    window: int = 1024,
    config: HashConfig | None = None,
    batch_size: int = 1,
    model_name: str | None = None,
    progress: bool = False,
) -> HashCalibration:
    """Train per-layer hash MLPs of ``model`` on the first ``tokens`` tokens of ``text`` (cut into
    windows of ``window`` tokens; the last ``held_out`` share of windows measures the recall)."""
    from .models import model_label

    cfg = config or HashConfig()
    ids = windows(encode(tokenizer, text), tokens, window)
    split_windows(ids.shape[0], cfg.held_out)  # fail before the capture, not after
    captured = capture_qk(model, ids, batch_size=batch_size, progress=progress)
    weights, reports = train_captured(captured, cfg, progress=progress)
    result = HashCalibration(weights, reports, {})
    result.metadata = {
        "kind": formats.HASHATTENTION,
        "model": model_name or model_label(model),
        "model_signature": json.dumps(formats.model_signature(model)),
        "tokens": ids.numel(),
        "window": ids.shape[1],
        "recall": f"{result.recall:.4f}",
        "random_recall": f"{result.random_recall:.4f}",
        "recall_per_layer": json.dumps([round(r.recall, 4) for r in reports]),
        "config": json.dumps(asdict(cfg)),
    }
    return result
