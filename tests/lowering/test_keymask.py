"""Which attention masks the estimators' score kernels apply themselves (maskgraph.lowering.keymask)."""

from __future__ import annotations

import pytest
import torch

from maskgraph.env import Env
from maskgraph.lowering import keymask

B, HQ, HKV, Q, K, D = 2, 4, 2, 3, 37, 8


def env_with(mask: torch.Tensor | None, num_keys: torch.Tensor | None = None) -> Env:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(B, HQ, Q, D, generator=gen)
    k = torch.randn(B, HKV, K, D, generator=gen)
    return Env(q, k, k, mask, D**-0.5, torch.arange(K - Q, K), 0, num_keys)


def test_no_mask_is_nothing_to_apply():
    assert keymask.kernel_mask(env_with(None)) == (None,)
    assert keymask.mask_strides(None) == (0, 0, 0)


@pytest.mark.parametrize("shape", [(B, 1, 1, K), (1, 1, Q, K), (B, 1, Q, K)])
def test_masks_the_same_for_every_head_go_to_the_kernels(shape):
    am = torch.zeros(shape)
    am[..., 3] = float("-inf")
    for per_head in (False, True):
        (got,) = keymask.kernel_mask(env_with(am), per_head)
        assert got is am
    strides = keymask.mask_strides(am)
    assert strides == tuple(am.stride(i) if shape[i] > 1 else 0 for i in range(3))
    assert strides[1] == 0 and (strides[0] == 0) == (shape[0] == 1)


def test_a_mask_per_head_goes_to_the_per_head_kernels_only():
    am = torch.zeros(B, HQ, Q, K)
    assert keymask.kernel_mask(env_with(am), per_head=False) is None
    (got,) = keymask.kernel_mask(env_with(am), per_head=True)
    assert keymask.mask_strides(got) == (HQ * Q * K, Q * K, K)


def test_keys_not_contiguous_are_copied_once_and_refused_by_the_launch():
    wide = torch.zeros(B, 1, 1, 2 * K)
    am = wide[..., ::2]
    (got,) = keymask.kernel_mask(env_with(am))
    assert got.stride(-1) == 1 and torch.equal(got, am)
    with pytest.raises(ValueError, match="contiguous keys"):
        keymask.mask_strides(am)


def test_what_stays_with_torch():
    """A static buffer's token count without a mask."""
    assert keymask.kernel_mask(env_with(None, torch.tensor(30))) is None
    assert keymask.kernel_mask(env_with(None)) == (None,)
