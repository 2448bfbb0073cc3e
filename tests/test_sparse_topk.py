"""Radix top-k (Triton, run on the CPU through Triton's interpreter) against torch.topk."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="the radix top-k needs triton (installed by setup.sh --dev)")

from maskgraph.sparse.topk import BLOCK, radix_topk  # noqa: E402
from maskgraph.triton_util import interpreting  # noqa: E402

if not torch.cuda.is_available() and not interpreting():
    pytest.skip(
        "no GPU and Triton's interpreter is off (tests/conftest.py turns it on)", allow_module_level=True
    )


def scores(kind: str, shape, gen) -> torch.Tensor:
    s = torch.randn(*shape, generator=gen)
    if kind == "ints":  # HashAttention-like: few distinct values, ties everywhere
        s = torch.randint(0, 33, shape, generator=gen).float()
    if kind == "negative_and_inf":  # every sign and −inf (forbidden keys)
        s = -s.abs() * 1e-3
        s[..., ::7] = float("-inf")
    if kind == "mixed_signs":
        s = s * torch.logspace(-30, 30, shape[-1])
    return s


@pytest.mark.parametrize(
    "shape, k",
    [((3, 5000), 100), ((2, 2 * BLOCK + 3), 2 * BLOCK + 3), ((4, 700), 1), ((1, 2, 3, 999), 333)],
)
@pytest.mark.parametrize("kind", ["normal", "ints", "negative_and_inf", "mixed_signs"])
def test_radix_topk_is_a_top_k(shape, k, kind):
    gen = torch.Generator().manual_seed(hash((shape, k, kind)) % 1000)
    s = scores(kind, shape, gen)
    values, idx = radix_topk(s, k)
    want, _ = torch.topk(s, k, dim=-1)
    assert values.shape == idx.shape == (*shape[:-1], k) and idx.dtype == torch.int64
    assert torch.equal(torch.gather(s, -1, idx), values)  # values are the scores at idx
    assert torch.equal(values.sort(-1).values, want.sort(-1).values)  # the k largest (ties: any)
    assert (idx.sort(-1).values.diff(dim=-1) > 0).all()  # each index once
