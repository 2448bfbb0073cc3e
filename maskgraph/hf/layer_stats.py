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

    def table(self, legend: bool = True) -> str:
        """The observed layers, one row per run of consecutive layers whose density and call
        count print the same ("2–29"), their relative errors as a range; with ``legend``, two
        lines saying what "calls" and a good relative error are."""
        lines = [f"{'layers':<8}  density  {'rel. error':<15}  calls"]
        for run in self._runs():
            first, last = run[0], run[-1]
            layers = str(first) if first == last else f"{first}–{last}"
            errors = sorted(self.relative_error(i) for i in run)
            error = (
                f"{errors[0]:.4f}"
                if f"{errors[0]:.4f}" == f"{errors[-1]:.4f}"
                else f"{errors[0]:.4f}–{errors[-1]:.4f}"
            )
            lines.append(
                f"{layers:<8}  {self.density(first):7.3f}  {error:<15}  {self.layers[first].calls:5d}"
            )
        if legend:
            lines += LEGEND
        return "\n".join(lines)

    def _runs(self) -> list[list[int]]:
        """Consecutive observed layers grouped while their printed density and calls agree."""
        runs: list[list[int]] = []
        for i in sorted(self.layers):
            if runs and runs[-1][-1] == i - 1 and self._key(runs[-1][-1]) == self._key(i):
                runs[-1].append(i)
            else:
                runs.append([i])
        return runs

    def _key(self, i: int) -> tuple[str, int]:
        return f"{self.density(i):.3f}", self.layers[i].calls


#: What :meth:`LayerStats.table`'s columns mean, printed under it.
LEGEND = [
    "calls: attention calls of the layer that went through the graph (a prompt is one, each "
    "generated token one more)",
    "rel. error: |O - O_dense| / |O_dense| of the layer's attention output; 0 is exact, under "
    "about 0.1 in every layer usually keeps dense attention's answer, 0.25 and more can change it",
]


def _allowed(attention_mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
    """Bool, broadcast to ``shape`` (B, Hq, Q, K): keys the attention mask lets each query see."""
    if attention_mask is None:
        return torch.ones(shape, dtype=torch.bool)
    am = attention_mask[..., : shape[-1]]
    ok = am if am.dtype == torch.bool else am > float("-inf")
    return ok.expand(shape)
