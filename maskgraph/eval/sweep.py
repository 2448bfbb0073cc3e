"""Density sweep: graph parameters that aim at a target density, by one documented rule.

For a target density ``d`` at context length ``L`` tokens the budget is ``T = d·L`` keys.

1. Fixed part (``sink_size`` + ``window_size``): graphs that also select or sample get
   ``F = min(256, ⌊T/2⌋)`` tokens, split evenly (``sink = ⌊F/2⌋``, ``window = F − sink``);
   StreamingLLM (fixed part only) gets ``sink = min(128, ⌊T/2⌋)``, ``window = T − sink``.
2. The rest of the budget, ``h = d − F/L`` (a share of K, at least 0.001), goes to the
   graph's knob:
   - ``heavy_size = h`` (top-k graphs: oracle_topk, quest, pqcache, hashattention,
     double_sparsity, socket);
   - ``sampling_rate = h`` (random_sampling);
   - ``heavy_size = base_rate_sampling = h/2`` (vattention; its adaptive sampler may add more);
   - ``top_p`` from :data:`TOP_P_FOR_DENSITY` at the nearest target (oracle_topp: top-p has no
     density knob, so the density follows the attention's shape);
   - magicpig keeps its LSH parameters (its density follows the collision rate);
   - ``heavy_size = recent_size = d/2`` (h2o, which has no sinks);
   - ``budget = d − window_size/L`` (snapkv, pyramidkv: the voted keys beside the observation
     window they always keep; tova: ``budget = d``). Graphs that evict keep every key at the
     call that shows them the prompt (its queries attend every key), so their measured density
     lies above the target; the report's kept cache is the share they hold.

The rule only aims; the **measured** density (micro metrics) is what reports show.
"""

from __future__ import annotations

from typing import Any

from ..errors import MaskgraphError

FIXED_CAP = 256
STREAMING_SINK_CAP = 128
MIN_SHARE = 0.001
TOP_P_FOR_DENSITY = {0.02: 0.5, 0.05: 0.7, 0.1: 0.8, 0.2: 0.9, 0.3: 0.95}


def sweep_overrides(params: dict[str, Any], target: float, length: int) -> dict[str, Any]:
    """Overrides of a graph's ``params:`` block aiming at density ``target`` at ``length`` keys.

    ``params`` is the graph's parameter block (only its names are read). Returns ``{}`` for a
    graph without sparsity knobs (dense).
    """
    if not 0 < target <= 1:
        raise MaskgraphError(f"target density must be in (0, 1], got {target}")
    if length < 1:
        raise MaskgraphError(f"length must be >= 1, got {length}")
    names = set(params)
    budget = max(2, int(target * length))
    out: dict[str, Any] = {}
    has_knob = names & {"heavy_size", "sampling_rate", "top_p", "lsh_l"}
    if "budget" in names and "sink_size" not in names:  # SnapKV, PyramidKV, TOVA
        window = params.get("window_size", 0)
        window = window if isinstance(window, int) and not isinstance(window, bool) else 0
        return {"budget": round(max(MIN_SHARE, target - window / length), 6)}
    if {"heavy_size", "recent_size"} <= names and "sink_size" not in names:  # H2O
        half = round(max(MIN_SHARE, target / 2), 6)
        return {"heavy_size": half, "recent_size": half}
    if {"sink_size", "window_size"} <= names:
        if has_knob:
            fixed = min(FIXED_CAP, budget // 2)
            out["sink_size"] = max(1, fixed // 2)
            out["window_size"] = max(1, fixed - fixed // 2)
        else:
            sink = max(1, min(STREAMING_SINK_CAP, budget // 2))
            out["sink_size"] = sink
            out["window_size"] = max(1, budget - sink)
    fixed_share = (out.get("sink_size", 0) + out.get("window_size", 0)) / length
    rest = round(max(MIN_SHARE, target - fixed_share), 6)
    if "base_rate_sampling" in names and "heavy_size" in names:
        out["heavy_size"] = round(max(MIN_SHARE, rest / 2), 6)
        out["base_rate_sampling"] = round(max(MIN_SHARE, rest / 2), 6)
    elif "heavy_size" in names:
        out["heavy_size"] = rest
    elif "sampling_rate" in names:
        out["sampling_rate"] = rest
    elif "top_p" in names:
        nearest = min(TOP_P_FOR_DENSITY, key=lambda t: abs(t - target))
        out["top_p"] = TOP_P_FOR_DENSITY[nearest]
    return out
