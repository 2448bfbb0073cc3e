"""Methods that evict keys from the cache: SnapKV, H2O and TOVA as masks (docs/methods/).

KV-cache compression keeps a set of keys per layer (and head) and forgets the rest for good.
Here the cache keeps every key and the mask attends only the kept set S_t, so such a method
sits in a graph beside sparse-attention operators (and under them: SnapKV's keys with Quest
choosing among them). Each operator keeps its set in its State slot, per layer and request:

- ``kept`` (B, H, n) bool: the set the calls over n keys attend (H = Hkv, or 1 for one set per
  layer); ``next`` (B, H, n) bool: the set left after the last call, from what it observed
  (its queries, or its attention probabilities);
- when new keys arrive (K > n) ``next`` becomes the set and the new keys join it as kept; a key
  leaves only by eviction, and an evicted key is never kept again (S_{t+1} ⊆ next_t ∪ new
  keys ⊆ S_t ∪ new keys);
- the set is a function of the step: calls over the same K (a repeated call, ``attn.mask``
  after the call, as the eval's density measurement does) attend the same set.

The mask of a call is (B, Hq, 1, K): query head h reads the set of KV head h // G. Without a
State every call is a first call and nothing is evicted. :func:`kept_share` reads the kept
share of a slot (the cache the method must hold, docs/results.md). Every entry of the slots is
per batch row (``batch_rows``): beam search moves them with the cache's rows.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ...attention import gqa_logits
from ...env import size_of
from ...lowering import NotSparse
from ...registry import Param, Port, operator
from ...state import AttentionFeedback, Observation
from ...types import PortType
from ..select import topk_lowest

_KEYS = Port("keys", PortType.KEYS, doc="the key cache (its length; SnapKV reads the keys)")
_QUERIES = Port("queries", PortType.QUERIES, doc="the queries (SnapKV: those of the first call)")

_FEEDBACK_ONLY = NotSparse(
    "it evicts by the attention probabilities of each call (feedback), which sparse mode's "
    "attention does not return; use mode='simulate'"
)


def kept_keys(slot: dict[str, Any]) -> torch.Tensor | None:
    """The set the slot's calls attend, (B, H, K) bool: the keys the method holds in its cache
    at this step (None before the first call)."""
    kept = slot.get("kept")
    return kept if isinstance(kept, torch.Tensor) else None


def kept_share(slot: dict[str, Any]) -> float | None:
    """The share of seen keys an eviction operator's slot keeps (mean over batch rows and
    heads), or None where it holds no set."""
    kept = kept_keys(slot)
    if kept is None or kept.numel() == 0:
        return None
    return float(kept.float().mean())


def _grown(slot: dict, keys: torch.Tensor, heads: int) -> torch.Tensor | None:
    """The set of this step, (B, heads, K) bool: the slot's set where K is its key count; where
    keys arrived since, the set left after the last call (``next``) with the new keys kept.
    None where the slot holds nothing valid for these keys (a first call, a shrunk cache,
    other shapes). Extends ``score`` with zeros when the slot has one."""
    b, _, k, _ = keys.shape
    kept = slot.get("kept")
    if kept is None or kept.shape[:2] != (b, heads) or kept.shape[2] > k or kept.device != keys.device:
        return None
    new = k - kept.shape[2]
    if new:
        kept = slot.pop("next", kept)
        kept = torch.cat([kept, kept.new_ones(b, heads, new)], dim=2)
        score = slot.get("score")
        if score is not None:
            slot["score"] = torch.cat([score, score.new_zeros(b, heads, new)], dim=2)
        slot["kept"] = kept
    return kept


def _as_mask(env, kept: torch.Tensor) -> torch.Tensor:
    """A kept set (B, Hkv or 1, K) bool -> mask (B, Hq or 1, 1, K) float32."""
    if kept.shape[1] not in (1, env.Hq):
        kept = kept.repeat_interleave(env.Hq // kept.shape[1], dim=1)
    return kept.float().unsqueeze(2)


def _keep_best(scores: torch.Tensor, eligible: torch.Tensor, n: int) -> torch.Tensor:
    """Bool like ``scores`` (…, K): the ``n`` eligible entries of largest score (ties toward the
    lowest position); fewer where fewer are eligible."""
    k = scores.shape[-1]
    n = min(max(n, 0), k)
    chosen = torch.zeros_like(eligible)
    if n == 0:
        return chosen
    masked = scores.float().masked_fill(~eligible, float("-inf"))
    vals, idx = topk_lowest(masked, n, triton=False)
    return chosen.scatter(-1, idx, vals > float("-inf"))


# ----- SnapKV -------------------------------------------------------------------------------------
def snapkv_votes(observed: Observation, keys: torch.Tensor, window: int, kernel: int) -> torch.Tensor:
    """SnapKV's votes for the keys before the observation window: (B, Hkv, K − w) float32.

    The last w = min(window, Q) queries attend every key (softmax over what their mask allows);
    each key before the window scores its probability averaged over those queries, smoothed by
    an average pool of ``kernel`` keys (zero-padded; key j averages j − ⌊kernel/2⌋ … on, so an
    odd kernel is centred) and averaged over each KV group's query heads."""
    q = observed.queries
    b, hq, nq, _ = q.shape
    hkv, k = keys.shape[1], keys.shape[2]
    w = min(window, nq)
    am = observed.attention_mask
    if am is not None and am.shape[2] != 1:
        am = am[:, :, -w:]
    probs = torch.softmax(gqa_logits(q[:, :, -w:], keys, observed.scaling, am), dim=-1)
    votes = probs[..., : k - w].mean(dim=2)  # (B, Hq, K − w)
    votes = torch.nan_to_num(votes, nan=0.0)  # a window query with no allowed key votes for none
    pooled = F.avg_pool1d(votes.reshape(b * hq, 1, k - w), kernel, stride=1, padding=kernel // 2)
    pooled = pooled[..., : k - w]  # an even kernel gives one more: it covers j − kernel/2 … j + kernel/2 − 1
    return pooled.view(b, hkv, hq // hkv, k - w).mean(dim=2)


def prepare_snapkv(
    keys, values, params, slot, layer_idx, observed: Observation | None = None
) -> dict[str, torch.Tensor]:
    """The kept set (B, Hkv, K) bool as ``{"keep": ...}``.

    The first call a layer sees (with its queries) chooses: the ``budget`` keys before the
    window with the most votes (:func:`snapkv_votes`) and the window's keys are kept; that call
    itself attends every key (SnapKV compresses after the prefill). Later calls attend the
    chosen keys and every key that arrived after the first call."""
    b, hkv, k, _ = keys.shape
    kept = _grown(slot, keys, hkv)
    if kept is not None:
        return {"keep": kept}
    every = torch.ones(b, hkv, k, dtype=torch.bool, device=keys.device)
    if observed is None:  # nothing to choose by: keep everything, choose at the next call
        return {"keep": every}
    w = min(params["window_size"], observed.queries.shape[2])
    slot.update(kept=every, next=every)
    if w >= k:  # the window holds every key
        return {"keep": every}
    scores = snapkv_votes(observed, keys, params["window_size"], params["kernel_size"])
    chosen = _keep_best(scores, torch.ones_like(scores, dtype=torch.bool), size_of(params["budget"], k))
    slot["next"] = torch.cat([chosen, every[:, :, k - w :]], dim=2)
    return {"keep": every}


@operator(
    "snapkv",
    family="selector",
    output=PortType.MASK,
    inputs=[_QUERIES, _KEYS],
    params=[
        Param(
            "window_size",
            "int",
            32,
            "observation window: the last queries of the first call",
            low=1,
            high=2**20,
        ),
        Param("kernel_size", "int", 7, "average-pool width over the votes (odd: centred)", low=1, high=1023),
        Param("budget", "size", 0.1, "keys kept before the window (int) or share of the first call's K"),
    ],
    doc=(
        "SnapKV's kept keys: at the first call of a layer (the prefill), the last window_size "
        "queries vote for the earlier keys (attention probability averaged over the window, "
        "average-pooled over kernel_size keys, averaged over each KV group); the budget keys "
        "with the most votes and the window are kept, the rest evicted for good. Keys added "
        "after that call are kept. The first call attends every key. Shape (B, Hq, 1, K)."
    ),
    paper="Li et al., 2024, SnapKV: LLM Knows What You are Looking for Before Generation",
    prepare=prepare_snapkv,
    stateful=True,
    observes=True,
    kept=kept_keys,
    batch_rows=("kept", "next"),
    static_buffers="its kept set is chosen from the first call's queries over a dynamic cache",
    sparse=NotSparse("its kept set is a per-head key list kept in the State; run mode='simulate'"),
)
def snapkv(env, *, window_size, kernel_size, budget, prep) -> torch.Tensor:
    return _as_mask(env, prep["keep"])


# ----- H2O ----------------------------------------------------------------------------------------
def prepare_h2o(keys, values, params, slot, layer_idx) -> dict[str, torch.Tensor]:
    """The kept set (B, Hkv, K) bool; the slot also accumulates ``score`` (B, Hkv, K)."""
    b, hkv, k, _ = keys.shape
    kept = _grown(slot, keys, hkv)
    if kept is None:
        kept = torch.ones(b, hkv, k, dtype=torch.bool, device=keys.device)
        slot.update(kept=kept, score=torch.zeros(b, hkv, k, device=keys.device))
    return {"keep": kept}


def feedback_h2o(slot, feedback: AttentionFeedback, params, layer_idx) -> None:
    """Add the call's attention mass to each key's score (summed over a KV group's query heads),
    then keep the ``recent_size`` newest keys and, among the older kept keys, the
    ``heavy_size`` of largest score."""
    kept, score = slot["kept"], slot["score"]
    b, hkv, k = kept.shape
    score = score + feedback.key_mass.view(b, hkv, -1, k).sum(dim=2)
    recent = torch.arange(k, device=kept.device) >= k - size_of(params["recent_size"], k)
    heavy = _keep_best(score, kept & ~recent, size_of(params["heavy_size"], k))
    slot.update(next=kept & (recent | heavy), score=score)


@operator(
    "h2o",
    family="selector",
    output=PortType.MASK,
    inputs=[_KEYS],
    params=[
        Param("heavy_size", "size", 0.1, "heavy hitters kept (int) or share of K"),
        Param("recent_size", "size", 0.1, "newest keys always kept (int) or share of K"),
    ],
    doc=(
        "H2O's kept keys: every key accumulates the attention probability it receives (summed "
        "over the queries of each call and a KV group's heads); after each call the "
        "recent_size newest keys and the heavy_size older kept keys of largest accumulated "
        "score stay, the rest are evicted for good. A call attends the set left by the "
        "previous one plus its new keys (the first call: every key). Shape (B, Hq, 1, K)."
    ),
    paper="Zhang et al., NeurIPS 2023, H2O: Heavy-Hitter Oracle for Efficient Generative Inference of LLMs",
    prepare=prepare_h2o,
    stateful=True,
    feedback=feedback_h2o,
    kept=kept_keys,
    batch_rows=("kept", "next", "score"),
    static_buffers="it evicts by each call's attention probabilities (simulate mode, dynamic cache)",
    sparse=_FEEDBACK_ONLY,
)
def h2o(env, *, heavy_size, recent_size, prep) -> torch.Tensor:
    return _as_mask(env, prep["keep"])


# ----- TOVA ---------------------------------------------------------------------------------------
def prepare_tova(keys, values, params, slot, layer_idx) -> dict[str, torch.Tensor]:
    """The kept set (B, 1, K) bool: one set for all heads of the layer."""
    b, _, k, _ = keys.shape
    kept = _grown(slot, keys, 1)
    if kept is None:
        kept = torch.ones(b, 1, k, dtype=torch.bool, device=keys.device)
        slot["kept"] = kept
    return {"keep": kept}


def feedback_tova(slot, feedback: AttentionFeedback, params, layer_idx) -> None:
    """Keep the ``budget`` kept keys the call's last query attends most (its probabilities
    averaged over every head of the layer); evict the rest."""
    kept = slot["kept"]
    k = kept.shape[2]
    score = feedback.last.mean(dim=1, keepdim=True)
    slot["next"] = _keep_best(score, kept, size_of(params["budget"], k))


@operator(
    "tova",
    family="selector",
    output=PortType.MASK,
    inputs=[_KEYS],
    params=[Param("budget", "size", 0.2, "keys kept (int) or share of K")],
    doc=(
        "TOVA's kept keys, one set per layer: after each call, while more than budget keys are "
        "kept, those the call's last query attends least (probability averaged over the "
        "layer's heads) are evicted for good. A call attends the set left by the previous one "
        "plus its new keys (the first call: every key). Shape (B, Hq, 1, K)."
    ),
    paper="Oren et al., 2024, Transformers are Multi-State RNNs",
    prepare=prepare_tova,
    stateful=True,
    feedback=feedback_tova,
    kept=kept_keys,
    batch_rows=("kept", "next"),
    static_buffers="it evicts by each call's attention probabilities (simulate mode, dynamic cache)",
    sparse=_FEEDBACK_ONLY,
)
def tova(env, *, budget, prep) -> torch.Tensor:
    return _as_mask(env, prep["keep"])
