"""Checks of the kernels' compiled-only branches on a GPU, against plain torch references.

The tests run every Triton kernel on the CPU through Triton's interpreter, which cannot take
some GPU-only instructions; a kernel then has a compiled branch the tests never reach (the
hardware bit count of HashAttention's group scores). This script runs those branches on the
GPU on awkward shapes and compares them exactly with the interpreter-free torch formula.
Prints one line per case and ``all ok`` last; exits 1 on a mismatch.

    python benchmarks/gpu_check.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maskgraph.ops.zoo import hashattention as ha  # noqa: E402


def plain_hash_scores(qw: torch.Tensor, kw: torch.Tensor, bits: int) -> torch.Tensor:
    """(B, Hkv, Q, K) float32: bits − differing bits, the max over each KV group's heads."""
    b, hq, q, nw = qw.shape
    hkv, k = kw.shape[1], kw.shape[2]
    x = (qw.view(b, hkv, hq // hkv, q, 1, nw) ^ kw.view(b, hkv, 1, 1, k, nw)).long() & 0xFFFFFFFF
    differ = sum((x >> i) & 1 for i in range(32)).sum(-1)
    return (bits - differ).amax(2).float()


def check_hash(device: torch.device) -> bool:
    ok = True
    # (B, Hq, Hkv, Q, K, bits): G = 4, 3, 1 and 6 (two rounds of heads); one and two words; K
    # past a block
    shapes = [
        (1, 32, 8, 1, 131077, 32),
        (2, 6, 2, 3, 5001, 64),
        (1, 4, 4, 1, 999, 5),
        (1, 12, 2, 2, 3001, 32),
    ]
    for b, hq, hkv, q, k, bits in shapes:
        gen = torch.Generator().manual_seed(k)
        nw = -(-bits // 32)
        qw = torch.randint(-(2**31), 2**31 - 1, (b, hq, q, nw), generator=gen, dtype=torch.int32)
        kw = torch.randint(-(2**31), 2**31 - 1, (b, hkv, k, nw), generator=gen, dtype=torch.int32)
        if bits % 32:
            qw[..., -1] &= (1 << (bits % 32)) - 1
            kw[..., -1] &= (1 << (bits % 32)) - 1
        got = ha._hash_group_scores(qw.to(device), kw.to(device), hkv, bits).cpu()
        same = torch.equal(got, plain_hash_scores(qw, kw, bits))
        ok &= same
        print(
            f"hash group scores B={b} Hq={hq} Hkv={hkv} Q={q} K={k} bits={bits}: {'ok' if same else 'MISMATCH'}"
        )
    return ok


def main() -> int:
    if not torch.cuda.is_available():
        print("no GPU: nothing to check (the tests cover the interpreted branches)")
        return 0
    ok = check_hash(torch.device("cuda"))
    print("all ok" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
