"""The attention mask handed to an estimator's score kernel, which then forbids keys itself.

An estimator kernel that reads the mask writes −inf where it forbids a key (Quest: on pages
with no allowed key) and, with the histograms of the bounded top-k, counts those keys in bin 0.
No pass over the scores is left to torch, and the Triton top-k may take the kernel's
histograms and drop the prior's keys itself, as without a mask (a padded batch's decode step).
"""

from __future__ import annotations

import torch


def kernel_mask(env, per_head: bool = False) -> tuple[torch.Tensor | None] | None:
    """``(mask,)`` for an estimator kernel: ``(None,)`` where ``env`` forbids nothing, the
    additive (B|1, H|1, Qc|1, K) mask (keys contiguous) where the kernel can apply it — heads
    of a KV group reading one row (``per_head`` False) need a mask that is the same for every
    head — and None where it cannot (the caller then forbids in torch): a static buffer
    without a mask (its token count), a mask of other dimensions or not of floats."""
    if env.allowed is None:
        return (None,)
    am = env.attention_mask
    if am is None or am.dim() != 4 or am.shape[-1] != env.K or not am.dtype.is_floating_point:
        return None
    if am.shape[1] != 1 and not per_head:
        return None
    return (am if am.stride(-1) == 1 else am.contiguous(),)


def mask_strides(am: torch.Tensor | None) -> tuple[int, int, int]:
    """(batch, head, query) strides of a kernel's mask, 0 where it broadcasts (or is None);
    its keys must be contiguous (as :func:`kernel_mask` hands it over)."""
    if am is None:
        return 0, 0, 0
    if am.stride(-1) != 1 and am.shape[-1] > 1:
        raise ValueError(f"an estimator kernel's mask needs contiguous keys, got strides {am.stride()}")
    return tuple(am.stride(i) if am.shape[i] != 1 else 0 for i in range(3))
