"""The environment an operator sees: the tensors of one query chunk and derived quantities."""

from __future__ import annotations

import torch

from .attention import gqa_logits

#: Relative tolerance of share · K before flooring (see :meth:`Env.size`).
SIZE_TOLERANCE = 1.0 + 1e-9


def size_of(value: int | float, num_keys: int) -> int:
    """A size parameter at ``num_keys`` keys: an int is tokens, a float in (0, 1] the share
    floor(value · num_keys).

    The product carries a relative tolerance of 1e-9 (:data:`SIZE_TOLERANCE`) so that a decimal
    share is floored as written: 0.29 of 100 keys is 29, although 0.29 * 100 is
    28.999999999999996 in binary.
    """
    if isinstance(value, float):
        return int(value * num_keys * SIZE_TOLERANCE)
    return int(value)


def int_min(a, b):
    """min of two sizes: Python's for two ints, ``torch.sym_min`` where one is symbolic (traced
    with dynamic shapes). Some torch releases break a traced graph at ``torch.sym_min`` of two
    plain ints (a static cache's sizes), so plain ints never reach it."""
    return min(a, b) if isinstance(a, int) and isinstance(b, int) else torch.sym_min(a, b)


def int_max(a, b):
    """max of two sizes, as :func:`int_min`."""
    return max(a, b) if isinstance(a, int) and isinstance(b, int) else torch.sym_max(a, b)


class Env:
    """Inputs of one attention call restricted to a chunk of queries.

    Attributes (B batch, Hq/Hkv heads, Qc queries in this chunk, K keys, D head dim):

    - ``queries`` (B, Hq, Qc, D); ``keys``, ``values`` (B, Hkv, K, D)
    - ``attention_mask``: additive, broadcastable to (B, Hq, Qc, K), or ``None``
    - ``scaling``: float; ``q_pos`` (Qc,) int64 absolute query positions (K − Q + i)
    - ``logits`` (B, Hq, Qc, K) float32: ``scaling·<q,k> + attention_mask``
    - ``allowed``: bool, broadcastable to logits, False where the attention mask forbids a key
    - ``layer_idx``: int
    - ``num_keys``: None, or for a static key buffer (sparse mode) the 0-d int64 tensor of
      tokens in it (K is then the buffer's length; see :meth:`size_bound`); keys from it on
      are not ``allowed`` (the caller's mask, if any, already forbids them)
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
        num_keys: torch.Tensor | None = None,
    ) -> None:
        self.queries = queries
        self.keys = keys
        self.values = values
        self.attention_mask = attention_mask
        self.scaling = scaling
        self.q_pos = q_pos
        self.layer_idx = layer_idx
        self.num_keys = num_keys
        self.B, self.Hq, self.Q, self.D = queries.shape
        self.Hkv = keys.shape[1]
        self.K = keys.shape[2]
        self.G = self.Hq // self.Hkv
        self._logits: torch.Tensor | None = None
        if attention_mask is not None:
            self.allowed = attention_mask > float("-inf")
        elif num_keys is not None:  # a static buffer without a mask: its padding is forbidden
            self.allowed = (torch.arange(self.K, device=keys.device) < num_keys).view(1, 1, 1, -1)
        else:
            self.allowed = None

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
        """Resolve a size parameter at this call's K keys (:func:`size_of`)."""
        return size_of(value, self.K)

    def size_bound(self, value: int | float) -> tuple[int, int | torch.Tensor]:
        """(bound, size) of a size parameter: ``size`` as :meth:`size` resolves it on the
        tokens, ``bound`` ≥ it a static int for shapes. They differ only for a share of a
        static buffer: the share of the buffer's length bounds the share of its token count
        (a 0-d tensor, floored the same way), which the selection then keeps."""
        bound = self.size(value)
        if not isinstance(value, float) or self.num_keys is None:
            return bound, bound
        size = (self.num_keys.to(torch.float64) * value * SIZE_TOLERANCE).floor().to(torch.int64)
        return bound, size

    def forbid(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` with −inf where the attention mask forbids a key."""
        if self.allowed is None:
            return scores
        return scores.masked_fill(~self.allowed, float("-inf"))
