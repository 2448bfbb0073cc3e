"""A prompt in one block-sparse call: FlexAttention over the graph's position rule.

A graph whose every node declares a position rule (``MaskLowering(..., positions=...)``: the
fixed patterns and the combinators) keeps, for a query at position t, keys chosen by t and
their positions alone. For such a graph a call of more than one query on a dynamic cache runs
through ``flex_attention`` with a ``BlockMask`` the composed rule makes: blocks of 128 × 128
(query, key) positions the rule empties are skipped, partial blocks are masked key by key, so
the keys attended per query are simulate mode's. Under the inductor backend on CUDA that is ONE
call of the compiled kernel. Where it cannot compile FlexAttention's eager reference would
materialise every score, so there the prompt runs chunked unless ``prefill="flex"`` asks for
the reference (it keeps the semantics, not the speed). Other graphs keep the chunked path of
:mod:`.runner`; :func:`choose_prefill` says which path a graph takes and why, once, when the
graph is compiled.
This module names no operator.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn.attention.flex_attention import AuxRequest, BlockMask, create_block_mask, flex_attention

from ..errors import NotSupportedError
from ..lowering import PositionRule
from ..static_keys import raise_recompile_limit
from .plan import Step

#: Queries and keys per block of the BlockMask (FlexAttention's default).
BLOCK = 128

#: BlockMasks kept per graph: one per distinct prompt shape and query chunk, and of those made
#: with an attention mask (each holds its mask, B·Q·K or more) only the latest few, the layers
#: of the forward at hand sharing one.
MASKS_KEPT = 64
WITH_MASK_KEPT = 4

#: Elements of one (B, Hq, chunk, K) float32 score tensor aimed for by an eager call's chunks.
CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class PrefillChoice:
    """How a sparse-mode call of more than one query on a dynamic cache runs.

    ``path``: ``"flex"`` (one FlexAttention call over the graph's position rule) or
    ``"chunked"`` (chunks of queries over gathered keys); ``reason``: why, in words.
    """

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


#: Values of the ``prefill`` option of sparse mode.
PREFILLS = ("auto", "flex", "chunked")


def choose_prefill(
    steps: list[Step], kernel: str = "auto", prefill: str = "auto", backend: str = "eager"
) -> PrefillChoice:
    """How a graph's prompts run, from its steps and the options.

    ``prefill="auto"``: ``flex`` where every node declares a position rule and the backend is
    inductor (one compiled FlexAttention call on CUDA; calls on other devices run chunked), else
    ``chunked`` naming the node without a rule or the backend (FlexAttention uncompiled computes
    every score, which the chunked path does not). ``"flex"``: FlexAttention for a position-only
    graph whatever the backend (its eager reference where it cannot compile); a graph with a
    node that has no position rule is refused. ``"chunked"``: chunks of queries over gathered
    keys. ``kernel="triton"`` (the fused kernel for every call, as asked) runs chunked.
    """
    if prefill not in PREFILLS:
        raise NotSupportedError(f"prefill must be one of {', '.join(PREFILLS)}, got {prefill!r}")
    if prefill == "chunked":
        return PrefillChoice("chunked", "prefill='chunked' was asked for")
    for step in steps:
        if step.positions is None:
            reason = (
                f"node '{step.name}' (op '{step.op}') declares no position rule: its keys depend "
                "on scores, so the prompt runs as chunks of queries over gathered keys"
            )
            if prefill == "flex":
                raise NotSupportedError(
                    f"prefill='flex' needs a graph that selects by position only; {reason}"
                )
            return PrefillChoice("chunked", reason)
    if kernel == "triton":
        return PrefillChoice("chunked", "kernel='triton' sends every call through the fused Triton kernel")
    if prefill == "flex":
        return PrefillChoice(
            "flex",
            "every node selects by position and prefill='flex' was asked for: FlexAttention with a "
            "block mask (compiled on CUDA under the inductor backend, its eager reference elsewhere)",
        )
    if backend != "inductor":
        return PrefillChoice(
            "chunked",
            f"backend {backend!r}: uncompiled FlexAttention would compute every score; with "
            "backend='inductor' a GPU runs the prompt as one FlexAttention call",
        )
    return PrefillChoice(
        "flex",
        "every node selects by position: one compiled FlexAttention call with a block mask on "
        "CUDA (calls on other devices run chunked)",
    )


def graph_rule(steps: list[Step], output: str, num_keys: int) -> PositionRule:
    """The output node's position rule at ``num_keys`` keys, composed from every step's."""
    rules: dict[str, PositionRule] = {}
    for step in steps:
        inputs = {
            port: [rules[s] for s in src] if isinstance(src, list) else rules[src]
            for port, src in step.inputs.items()
        }
        rules[step.name] = step.positions(step.params, inputs, num_keys)
    return rules[output]


@dataclass(frozen=True)
class FlexResult:
    """``out`` (B, Hq, Q, D) float32 and ``empty``, the 0-d int64 count of rows with no key."""

    out: torch.Tensor
    empty: torch.Tensor


_COMPILED_FLEX: list[Callable] = []


def compiled_flex() -> Callable:
    """``torch.compile(flex_attention)``, made once per process (FlexAttention's fused kernel:
    eager ``flex_attention`` materialises every score)."""
    if not _COMPILED_FLEX:
        raise_recompile_limit()  # a variant per prompt shape and mask kind
        _COMPILED_FLEX.append(torch.compile(flex_attention, fullgraph=True, backend="inductor"))
    return _COMPILED_FLEX[0]


class FlexPrefill:
    """``prefill(queries, keys, values, attention_mask, scaling, sinks, causal)`` -> :class:`FlexResult`.

    queries (B, Hq, Q, D) at positions K − Q … K − 1; keys, values (B, Hkv, K, D), Hq a multiple
    of Hkv; ``attention_mask`` None, bool (True = attend) or additive float, broadcastable to
    (B, Hq, Q, K): a key it forbids is not attended and an additive one's values are added to
    the logits; ``causal``: no key past the query's position, by rule (no mask built); ``sinks``
    (Hq,) sink logits or None.

    ``compile`` (the inductor backend) on CUDA: one call of ``torch.compile(flex_attention)``'s
    fused kernel, which skips the blocks the mask empties, over a block mask built by a compiled
    pass. Otherwise (the eager backend, and the CPU, where compiled FlexAttention returns no
    log-sum-exp for sink logits and the empty-row count): FlexAttention's eager reference,
    which materialises the scores of the queries it is given, so queries go in chunks of
    ``chunk_size`` (``"auto"``: (B, Hq, chunk, K) near ``CHUNK_ELEMENTS``).
    """

    def __init__(self, steps: list[Step], output: str, compile: bool, chunk_size: int | str = "auto") -> None:
        self.steps = steps
        self.output = output
        self.compile = compile
        self.chunk_size = chunk_size
        self._masks: OrderedDict[tuple, tuple[BlockMask, torch.Tensor | None]] = OrderedDict()

    def compiles(self, device: torch.device) -> bool:
        """Whether calls on ``device`` run as one compiled kernel call."""
        return self.compile and device.type == "cuda"

    def chunk_len(self, shape: tuple[int, int, int, int]) -> int:
        """Queries per eager call for ``shape`` = (B, Hq, Q, K)."""
        b, hq, q, k = shape
        if self.chunk_size != "auto":
            return int(self.chunk_size)
        return max(1, min(q, CHUNK_ELEMENTS // max(1, b * hq * k)))

    def block_mask(
        self,
        shape: tuple[int, int, int, int],
        rows: tuple[int, int],
        attention_mask: torch.Tensor | None,
        causal: bool,
        device: torch.device,
    ) -> BlockMask:
        """The BlockMask of queries ``rows`` = [start, stop) of ``shape`` = (B, Hq, Q, K), query i
        at position K − Q + i: the graph's rule, and ``causal`` and the attention mask where
        given. Built once per shape, rows and mask and reused by every layer of a forward (the
        same mask object, unchanged since: its version counter says so). Under
        ``torch.inference_mode`` an attention mask has no version counter, so each layer builds
        its own; of the masks made with an attention mask only the latest
        :data:`WITH_MASK_KEPT` are kept (each holds its mask)."""
        am = attention_mask
        key = (shape, rows, causal, str(device))
        if am is not None:
            if am.is_inference():
                return self._build(None, shape, rows, am, causal, device)
            key += (id(am), am._version, tuple(am.shape), am.dtype)
        hit = self._masks.get(key)
        if hit is not None:
            self._masks.move_to_end(key)
            return hit[0]
        return self._build(key, shape, rows, am, causal, device)

    def _build(self, key, shape, rows, am, causal, device) -> BlockMask:
        b, hq, q_len, k_len = shape
        start, stop = rows
        rule = graph_rule(self.steps, self.output, k_len)
        allowed = None if am is None else _allowed(am).expand(shape)
        mask_mod = _mask_mod(rule, k_len - q_len, start, causal, allowed)
        batch = b if am is not None and am.shape[0] > 1 else None
        heads = hq if am is not None and am.shape[1] > 1 else None
        made = create_block_mask(
            mask_mod,
            batch,
            heads,
            stop - start,
            k_len,
            device=device,
            BLOCK_SIZE=BLOCK,
            _compile=self.compiles(device),
        )
        if key is not None:
            self._masks[key] = (made, am)  # the mask is held: its id names no other tensor meanwhile
            with_mask = [k for k, (_, held) in self._masks.items() if held is not None]
            for old in with_mask[: max(0, len(with_mask) - WITH_MASK_KEPT)]:
                del self._masks[old]
            while len(self._masks) > MASKS_KEPT:
                self._masks.popitem(last=False)
        return made

    def __call__(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float,
        sinks: torch.Tensor | None = None,
        causal: bool = False,
    ) -> FlexResult:
        b, hq, q, _ = queries.shape
        shape = (b, hq, q, keys.shape[2])
        device = queries.device
        am = attention_mask
        if am is not None:
            am = am.to(device)
        dtype = torch.float32 if queries.dtype == torch.float64 else queries.dtype
        keys, values = keys.to(dtype), values.to(dtype)
        compiled = self.compiles(device)
        attend = compiled_flex() if compiled else _eager_flex
        step = q if compiled else self.chunk_len(shape)
        outs, lses = [], []
        for start in range(0, q, step):
            rows = (start, min(q, start + step))
            score_mod = None
            if am is not None and am.dtype != torch.bool:
                score_mod = _additive(am.expand(shape), start)
            out, aux = attend(
                queries[:, :, rows[0] : rows[1]].to(dtype),
                keys,
                values,
                score_mod=score_mod,
                block_mask=self.block_mask(shape, rows, am, causal, device),
                scale=scaling,
                enable_gqa=hq != keys.shape[1],
                return_aux=AuxRequest(lse=True),
            )
            outs.append(out.float())
            lses.append(aux.lse.float())
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        lse = lses[0] if len(lses) == 1 else torch.cat(lses, dim=2)
        if sinks is not None:
            # Σ e^s v / (Σ e^s + e^sink) = out · σ(lse − sink); a row with no key stays 0
            out = out * torch.sigmoid(lse - sinks.float().view(1, hq, 1)).unsqueeze(-1)
        empty = (lse == float("-inf")).sum()
        return FlexResult(out, empty)


def _eager_flex(*args, **kwargs):
    """``flex_attention`` without torch.compile (the eager backend), without torch's advice to
    compile it: that advice is the inductor backend's (:func:`compiled_flex`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(*args, **kwargs)


def _allowed(am: torch.Tensor) -> torch.Tensor:
    """Bool, True where an attention mask (bool, or additive float) lets a key be attended."""
    return am if am.dtype == torch.bool else am > float("-inf")


def _mask_mod(
    rule: PositionRule, offset: int, start: int, causal: bool, allowed: torch.Tensor | None
) -> Callable:
    """FlexAttention's ``mask_mod(b, h, q, kv)`` for queries from row ``start`` on: query q is
    row start + q, at position offset + start + q; ``allowed`` (B, Hq, Q, K) is indexed by row."""

    def mask_mod(b, h, q_idx, kv_idx):
        row = q_idx + start
        t = row + offset
        keep = rule(t, kv_idx)
        if causal:
            keep = keep & (kv_idx <= t)
        if allowed is not None:
            keep = keep & allowed[b, h, row, kv_idx]
        return keep

    return mask_mod


def _additive(bias: torch.Tensor, start: int) -> Callable:
    """FlexAttention's ``score_mod`` adding an additive mask (B, Hq, Q, K) to the logits of
    queries from row ``start`` on."""

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + bias[b, h, q_idx + start, kv_idx].to(score.dtype)

    return score_mod
