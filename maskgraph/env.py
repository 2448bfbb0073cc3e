"""The environment an operator sees: the tensors of one query chunk and derived quantities."""

from __future__ import annotations

import torch

from .attention import gqa_logits

#: Relative tolerance of share · K before flooring (see :meth:`Env.size`).
SIZE_TOLERANCE = 1.0 + 1e-9


class Env:
    """Inputs of one attention call restricted to a chunk of queries.

    Attributes (B batch, Hq/Hkv heads, Qc queries in this chunk, K keys, D head dim):

    - ``queries`` (B, Hq, Qc, D); ``keys``, ``values`` (B, Hkv, K, D)
    - ``attention_mask``: additive, broadcastable to (B, Hq, Qc, K), or ``None``
    - ``scaling``: float; ``q_pos`` (Qc,) int64 absolute query positions (K − Q + i)
    - ``logits`` (B, Hq, Qc, K) float32: ``scaling·<q,k> + attention_mask``
    - ``allowed``: bool, broadcastable to logits, False where the attention mask forbids a key
    - ``layer_idx``: int
    """

    def __init__(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float,
        q_pos: torch.Tensor,
        layer_idx: int = 0,
    ) -> None:
        self.queries = queries
        self.keys = keys
        self.values = values
        self.attention_mask = attention_mask
        self.scaling = scaling
        self.q_pos = q_pos
        self.layer_idx = layer_idx
        self.B, self.Hq, self.Q, self.D = queries.shape
        self.Hkv = keys.shape[1]
        self.K = keys.shape[2]
        self.G = self.Hq // self.Hkv
        self._logits: torch.Tensor | None = None
        if attention_mask is None:
            self.allowed = None
        else:
            self.allowed = attention_mask > float("-inf")

    @property
    def logits(self) -> torch.Tensor:
        """(B, Hq, Qc, K) float32 ``scaling·<q,k> + attention_mask``, computed on first use."""
        if self._logits is None:
            self._logits = gqa_logits(self.queries, self.keys, self.scaling, self.attention_mask)
        return self._logits

    @property
    def k_pos(self) -> torch.Tensor:
        """(K,) int64 key positions 0..K−1."""
        return torch.arange(self.K, device=self.keys.device)

    def size(self, value: int | float) -> int:
        """Resolve a size parameter: int = tokens, float in (0, 1] = floor(share · K).

        The product carries a relative tolerance of 1e-9 so that a decimal share is floored as
        written: 0.29 of K = 100 is 29, although 0.29 * 100 is 28.999999999999996 in binary.
        """
        if isinstance(value, float):
            return int(value * self.K * SIZE_TOLERANCE)
        return value

    def forbid(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` with −inf where the attention mask forbids a key."""
        if self.allowed is None:
            return scores
        return scores.masked_fill(~self.allowed, float("-inf"))
