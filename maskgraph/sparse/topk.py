"""Top-k by radix selection in Triton: the k largest scores of each row, as a set.

``torch.topk`` over a long row (128K scores, k = 13K) costs ≈ 50–65 µs on an H100, more than
the attention over the selected keys; selecting the k-th largest key byte by byte (four
histogram passes, :mod:`.topk_kernel`) and then writing every score at or above it takes a
fixed ten launches that read the row five times. The set equals ``torch.topk``'s up to the
choice among scores tied with the k-th largest (any of them is a valid top-k, as with
``torch.topk``). Registered as the custom operator ``maskgraph::radix_topk`` so that
``torch.compile`` calls it as one opaque kernel.
"""

from __future__ import annotations

import torch

from ..triton_util import jitted

BLOCK = 2048


def _kernels():
    return tuple(
        jitted("maskgraph.sparse.topk_kernel", f) for f in ("radix_histogram", "radix_choose", "radix_gather")
    )


@torch.library.custom_op("maskgraph::radix_topk", mutates_args=())
def radix_topk_2d(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (R, N) float32, 1 ≤ k ≤ N -> (values (R, k) float32, indices (R, k) int64), each
    row's k largest in no particular order."""
    histogram, choose, gather = _kernels()
    scores = scores.contiguous()
    rows, n = scores.shape
    state = torch.zeros(rows, 260, device=scores.device, dtype=torch.int32)
    chunks = (rows, -(-n // BLOCK))
    for i, shift in enumerate((24, 16, 8, 0)):
        histogram[chunks](scores, state, n, n, shift, BLOCK=BLOCK, FIRST=i == 0, num_warps=8)
        choose[(rows,)](state, k, shift, num_warps=4)
    values = torch.empty(rows, k, device=scores.device, dtype=scores.dtype)
    indices = torch.empty(rows, k, device=scores.device, dtype=torch.int64)
    gather[chunks](scores, state, values, indices, n, k, n, BLOCK=BLOCK, num_warps=8)
    return values, indices


@radix_topk_2d.register_fake
def _(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = scores.shape[0]
    return scores.new_empty(rows, k), scores.new_empty(rows, k, dtype=torch.int64)


def radix_topk(scores: torch.Tensor, k) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(scores, k, dim=-1, sorted=False)`` for float32 scores (…, N), by radix
    selection: (values, indices) of shape (…, k)."""
    lead = scores.shape[:-1]
    values, indices = radix_topk_2d(scores.reshape(-1, scores.shape[-1]).float(), k)
    return values.view(*lead, k), indices.view(*lead, k)
