"""A small observer for injections: per-layer density and relative output error against dense.

stats = LayerStats()
with mg.inject(model, graph, observer=stats):
    model.generate(...)
print(stats.table())
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..lower import CompiledAttention
from ..lower import compile as mg_compile


@dataclass
class _Totals:
    kept: float = 0.0
    allowed: float = 0.0
    err2: float = 0.0
    ref2: float = 0.0
    calls: int = 0


class LayerStats:
    """Accumulates, per layer, over every observed attention call:

    - density: attended keys / keys the attention mask allows (over batch, heads, queries);
    - relative output error: ‖O − O_dense‖ / ‖O_dense‖ over all observed outputs of the layer.

    Costs one extra mask and one dense attention per observed call.
    """

    def __init__(self) -> None:
        self.layers: dict[int, _Totals] = {}
        self._dense: CompiledAttention = mg_compile("dense")

    def observe(self, layer_idx, queries, keys, values, attention_mask, scaling, out, attn) -> None:
        """See :class:`maskgraph.hf.inject.Observer`. queries (B,Hq,Q,D), out (B,Hq,Q,D)."""
        with torch.no_grad():
            p = attn.mask(queries, keys, values, attention_mask, scaling, layer_idx=layer_idx)
            allowed = _allowed(attention_mask, p.shape)
            ref = self._dense(queries, keys, values, attention_mask, scaling).float()
            t = self.layers.setdefault(layer_idx, _Totals())
            t.kept += float(((p > 0) & allowed).sum())
            t.allowed += float(allowed.sum())
            t.err2 += float((out.float() - ref).pow(2).sum())
            t.ref2 += float(ref.pow(2).sum())
            t.calls += 1

    def density(self, layer_idx: int) -> float:
        t = self.layers[layer_idx]
        return t.kept / max(t.allowed, 1.0)

    def relative_error(self, layer_idx: int) -> float:
        t = self.layers[layer_idx]
        return (t.err2 / max(t.ref2, 1e-30)) ** 0.5

    def table(self) -> str:
        """One line per observed layer: index, density, relative output error, calls."""
        lines = ["layer  density  rel.error  calls"]
        for i in sorted(self.layers):
            lines.append(
                f"{i:5d}  {self.density(i):7.3f}  {self.relative_error(i):9.4f}  {self.layers[i].calls:5d}"
            )
        return "\n".join(lines)


def _allowed(attention_mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
    """Bool, broadcast to ``shape`` (B, Hq, Q, K): keys the attention mask lets each query see."""
    if attention_mask is None:
        return torch.ones(shape, dtype=torch.bool)
    am = attention_mask[..., : shape[-1]]
    ok = am if am.dtype == torch.bool else am > float("-inf")
    return ok.expand(shape)
