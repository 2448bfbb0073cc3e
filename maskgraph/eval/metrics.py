"""Micro metrics of each attention call that goes through a graph, per layer and head.

For one call with queries (B, Hq, Q, D), keys/values (B, Hkv, K, D), the graph's mask
``p`` (B, Hq, Q, K) and output ``O`` (B, Hq, Q, D), per head h:

- **density**: mean over (b, q) of  #{j allowed : p_j > 0} / #{j allowed}, where "allowed"
  is what the attention mask lets the query see (causality, padding);
- **relative output error**: ‖O_h − O^dense_h‖ / ‖O^dense_h‖ (Frobenius over b, q, d), with
  O^dense the exact softmax attention over the allowed keys (needs a dense pass);
- **recall**: mean over (b, q) of the true softmax mass on the selected keys,
  Σ_{p_j>0} softmax(s)_j (needs the dense logits);
- **cache**: the share of the K keys the method keeps in its cache at this call (1 for a
  method that keeps every key and chooses per query; below 1 for one that evicts, SnapKV,
  H2O, TOVA: :meth:`maskgraph.lower.compiled.CompiledAttention.kept_cache`).

:class:`MicroObserver` is an ``observe(...)`` hook for :func:`maskgraph.inject`; with
``dense=False`` it measures density only (no dense pass). Every call becomes one JSON line;
:func:`summarise` reduces lines to per-layer and overall means.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import IO, Any

import torch

from ..attention import gqa_logits, gqa_weighted_sum

#: Queries per chunk of the dense pass (bounds the (B, Hq, chunk, K) temporaries).
CHUNK = 256


def additive(attention_mask: torch.Tensor | None, k: int) -> torch.Tensor | None:
    """Additive float mask from a bool (True = keep) or additive one, sliced to K keys."""
    if attention_mask is None:
        return None
    am = attention_mask[..., :k]
    if am.dtype == torch.bool:
        return torch.zeros(am.shape, dtype=torch.float32, device=am.device).masked_fill(~am, float("-inf"))
    return am.float()


def call_metrics(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    mask: torch.Tensor,
    out: torch.Tensor | None,
) -> dict[str, list[float]]:
    """Per-head density, and (when ``out`` is given) relative error and recall, of one call.

    queries (B, Hq, Q, D); keys, values (B, Hkv, K, D); attention_mask bool or additive,
    broadcastable to (B, Hq, Q, K) (or None); mask (B, Hq, Q, K) probabilities broadcastable;
    out (B, Hq, Q, D) the graph's output or None. Returns lists of length Hq.
    """
    b, hq, q, _ = queries.shape
    k = keys.shape[2]
    am = additive(attention_mask, k)
    kept_sum = torch.zeros(hq, dtype=torch.float64, device=queries.device)
    recall_sum = torch.zeros(hq, dtype=torch.float64, device=queries.device)
    err_sq = torch.zeros(hq, dtype=torch.float64, device=queries.device)
    ref_sq = torch.zeros(hq, dtype=torch.float64, device=queries.device)
    for start in range(0, q, CHUNK):
        stop = min(q, start + CHUNK)
        am_c = None if am is None else (am if am.shape[2] == 1 else am[:, :, start:stop])
        p_c = mask if mask.shape[2] == 1 else mask[:, :, start:stop]
        allowed = torch.ones(1, 1, 1, k, dtype=torch.bool, device=queries.device)
        if am_c is not None:
            allowed = am_c > float("-inf")
        sel = (p_c > 0) & allowed
        shape = (b, hq, stop - start, k)
        n_allowed = allowed.expand(shape).sum(-1).clamp_min(1)
        kept_sum += (sel.expand(shape).sum(-1) / n_allowed).double().sum(dim=(0, 2))
        if out is None:
            continue
        s = gqa_logits(queries[:, :, start:stop], keys, scaling, am_c)
        w = torch.softmax(s, dim=-1)
        recall_sum += torch.where(sel.expand(shape), w, 0.0).sum(-1).double().sum(dim=(0, 2))
        dense = gqa_weighted_sum(w, values)
        diff = out[:, :, start:stop].float() - dense
        err_sq += diff.double().pow(2).sum(dim=(0, 2, 3))
        ref_sq += dense.double().pow(2).sum(dim=(0, 2, 3))
    rows = b * q
    result = {"density": (kept_sum / rows).tolist()}
    if out is not None:
        result["recall"] = (recall_sum / rows).tolist()
        result["rel_err"] = (err_sq.sqrt() / ref_sq.sqrt().clamp_min(1e-30)).tolist()
    return result


class MicroObserver:
    """Observer for :func:`maskgraph.inject`: measures every call, writes one JSON line each.

    ``dense=True`` adds relative error and recall (a dense pass per call). ``state`` is a
    callable returning the injection's current State, so stateful operators reuse their
    caches when the mask is recomputed. ``tags`` (graph, task, sample, …) go into every line.
    """

    def __init__(
        self,
        sink: IO[str] | None = None,
        *,
        dense: bool = False,
        state: Callable[[], Any] | None = None,
        tags: dict[str, Any] | None = None,
    ) -> None:
        self.sink = sink
        self.dense = dense
        self.state = state
        self.tags = dict(tags or {})
        self.records: list[dict[str, Any]] = []

    def observe(self, layer_idx, queries, keys, values, attention_mask, scaling, out, attn) -> None:
        state = self.state() if self.state is not None else None
        with torch.no_grad():
            mask = attn.mask(queries, keys, values, attention_mask, scaling, state=state, layer_idx=layer_idx)
            m = call_metrics(
                queries, keys, values, attention_mask, scaling, mask, out if self.dense else None
            )
            m["cache"] = attn.kept_cache(state, layer_idx, queries.shape[1])
        record = {
            **self.tags,
            "layer": int(layer_idx),
            "Q": int(queries.shape[2]),
            "K": int(keys.shape[2]),
            **m,
        }
        self.records.append(record)
        if self.sink is not None:
            self.sink.write(json.dumps(record) + "\n")


METRIC_NAMES = ("density", "rel_err", "recall", "cache")


def summarise(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Mean of each metric per layer (over calls and heads, weighted by Q) and overall.

    ``overall`` also holds ``decode_density`` and ``decode_cache`` (:func:`_decode_means`).
    Returns ``{"overall": {metric: value}, "per_layer": {layer: {metric: value}},
    "per_head": {layer: {metric: [value per head]}}, "calls": n}``.
    """
    records = list(records)  # read twice
    sums: dict[int, dict[str, list[float]]] = defaultdict(dict)
    weights: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    calls = 0
    for r in records:
        calls += 1
        layer = int(r["layer"])
        wq = float(r["Q"])
        for name in METRIC_NAMES:
            if name not in r:
                continue
            acc = sums[layer].setdefault(name, [0.0] * len(r[name]))
            for h, v in enumerate(r[name]):
                acc[h] += wq * v
            weights[layer][name] += wq
    per_head = {
        layer: {n: [v / weights[layer][n] for v in vals] for n, vals in m.items()}
        for layer, m in sorted(sums.items())
    }
    per_layer = {layer: {n: sum(v) / len(v) for n, v in m.items()} for layer, m in per_head.items()}
    overall: dict[str, float] = {}
    for name in METRIC_NAMES:
        vals = [m[name] for m in per_layer.values() if name in m]
        if vals:
            overall[name] = sum(vals) / len(vals)
    overall.update(_decode_means(records))
    return {"overall": overall, "per_layer": per_layer, "per_head": per_head, "calls": calls}


def _decode_means(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """``decode_density`` and ``decode_cache``: the means over the calls of one query (decode
    steps) alone, over layers, heads and calls (absent where no such call). Methods that evict
    attend every key at the call that shows them the prompt; these compare them with the
    others where they differ, at generation."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        if int(r["Q"]) != 1:
            continue
        for name in ("density", "cache"):
            if name in r and r[name]:
                sums[name] += sum(r[name]) / len(r[name])
                counts[name] += 1
    return {f"decode_{name}": sums[name] / counts[name] for name in sums}
