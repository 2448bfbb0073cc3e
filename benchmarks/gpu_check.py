"""Checks of the kernels' compiled-only branches on a GPU, against plain torch references.

The tests run every Triton kernel on the CPU through Triton's interpreter, which cannot take
some GPU-only instructions; a kernel then has a compiled branch the tests never reach (the
hardware bit count of HashAttention's group scores), and ``tl.sort`` and the reductions
compile to other code than the interpreter runs. This script runs those kernels on the GPU on
awkward shapes and compares them exactly with plain torch: HashAttention's group scores; the
Triton top-k on each of its paths (sorted, radix in one program, segments; with the score
bounds Quest's and Double Sparsity's kernels write) against the torch rule; those bounds against
the scores' own.
Prints one line per case and ``all ok`` last; exits 1 on a mismatch.

    python benchmarks/gpu_check.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from references import block_ranges  # noqa: E402

from maskgraph.ops.zoo import double_sparsity as ds  # noqa: E402
from maskgraph.ops.zoo import hashattention as ha  # noqa: E402
from maskgraph.ops.zoo import quest  # noqa: E402
from maskgraph.sparse import topk as triton_topk  # noqa: E402
from maskgraph.sparse.topk import topk_lowest  # noqa: E402


def plain_hash_scores(qw: torch.Tensor, kw: torch.Tensor, bits: int, per_head: bool = False) -> torch.Tensor:
    """(B, Hkv, Q, K) float32: bits − differing bits, the max over each KV group's heads
    (``per_head``: (B, Hq, Q, K), each query head's own)."""
    b, hq, q, nw = qw.shape
    hkv, k = kw.shape[1], kw.shape[2]
    x = (qw.view(b, hkv, hq // hkv, q, 1, nw) ^ kw.view(b, hkv, 1, 1, k, nw)).long() & 0xFFFFFFFF
    agree = bits - sum((x >> i) & 1 for i in range(32)).sum(-1)
    return (agree.view(b, hq, q, k) if per_head else agree.amax(2)).float()


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
        for heads in (hkv, hq):  # grouped, then one query head a row (gqa="per_head")
            got = ha._hash_group_scores(qw.to(device), kw.to(device), heads, bits).cpu()
            same = torch.equal(got, plain_hash_scores(qw, kw, bits, per_head=heads == hq))
            ok &= same
            print(
                f"hash scores B={b} Hq={hq} Hkv={hkv} rows of {hq // heads} heads Q={q} K={k} "
                f"bits={bits}: {'ok' if same else 'MISMATCH'}"
            )
    return ok


def same_selection(scores: torch.Tensor, k: int, **kw) -> bool:
    """The Triton top-k of ``scores`` (on the GPU) picks the torch rule's set, with the scores
    at its indices as values (NaN read as −inf)."""
    values, idx = triton_topk.select_topk(scores, k, **kw)
    values, idx = values.cpu(), idx.cpu()
    _, ref_idx = topk_lowest(scores.cpu(), k, triton=False)
    counted = scores.cpu().nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    same_set = torch.equal(torch.sort(idx, -1).values, torch.sort(ref_idx, -1).values)
    return same_set and torch.equal(torch.gather(counted, -1, idx), values)


def check_topk(device: torch.device) -> bool:
    """Rows of 300 and 512 (sorted), 700 (radix in one program), 5000 and 131075 (segments), of
    Gaussian scores with −inf, NaN and ties."""
    ok = True
    for rows, n, k in [
        (8, 300, 30),
        (8, 512, 51),
        (8, 512, 512),
        (8, 700, 70),
        (4, 5000, 500),
        (2, 131075, 13107),
    ]:
        gen = torch.Generator().manual_seed(n + k)
        s = torch.randn(rows, n, generator=gen)
        s[:, ::7] = float("-inf")
        s[:, 3::11] = float("nan")
        s[:, 1::13] = s[:, 0::13][:, : s[:, 1::13].shape[1]]  # ties
        same = same_selection(s.to(device), k)
        ok &= same
        print(f"top-k rows={rows} N={n} k={k}: {'ok' if same else 'MISMATCH'}")
    return ok


def check_score_ranges(device: torch.device) -> bool:
    """Quest's (both kernels) and Double Sparsity's group scores write each block's bounds; the
    top-k given them picks the rule's set."""
    ok = True
    gen = torch.Generator().manual_seed(0)
    b, hq, hkv, q, d = 1, 32, 8, 1, 128
    for pages, dtype in [(8192, torch.bfloat16), (2051, torch.bfloat16), (2051, torch.float32)]:
        queries = torch.randn(b, hq, q, d, generator=gen).to(device, dtype)
        lo = torch.randn(b, hkv, pages, d, generator=gen).to(device, dtype)
        hi = lo + torch.rand(b, hkv, pages, d, generator=gen).to(device, dtype)
        scores, ranges = quest._quest_group_scores(queries, lo, hi, d**-0.5, hkv)
        block = quest._quest_block(quest._quest_dot(queries, lo, hi))
        tight = torch.equal(ranges.cpu().long(), block_ranges(scores.cpu(), block))
        same = same_selection(scores, pages // 10, ranges=ranges)
        own, own_ranges = quest._quest_group_scores(queries, lo, hi, d**-0.5, hq)  # per head
        heads = max_of_heads(own, scores, own_ranges, quest._quest_block(quest._quest_dot(queries, lo, hi)))
        ok &= tight and same and heads
        print(
            f"quest ranges P={pages} {dtype}: bounds {'ok' if tight else 'MISMATCH'}, top-k "
            f"{'ok' if same else 'MISMATCH'}, per head {'ok' if heads else 'MISMATCH'}"
        )
    for k, g in [(131072, 4), (8195, 3)]:
        nw, bits = 2, 4
        q_lab = torch.randn(b, hkv, g * q, nw * 8, generator=gen).to(device, torch.bfloat16)
        words = torch.randint(-(2**31), 2**31 - 1, (b, hkv, k, nw), generator=gen, dtype=torch.int32).to(
            device
        )
        lo = torch.randn(b, hkv, k, 1, generator=gen).to(device)
        step = torch.rand(b, hkv, k, 1, generator=gen).to(device)
        scores, ranges = ds._ds_group_scores(q_lab, words, lo, step, q, bits, d**-0.5)
        block = ds._ds_block(1 << (g - 1).bit_length())
        tight = torch.equal(ranges.cpu().long(), block_ranges(scores.cpu(), block))
        same = same_selection(scores, k // 10, ranges=ranges)
        own, own_ranges = ds._ds_group_scores(
            q_lab.view(b, hkv * g, q, -1), words, lo, step, q, bits, d**-0.5
        )
        heads = max_of_heads(own, scores, own_ranges, ds._ds_block(1))
        ok &= tight and same and heads
        print(
            f"double sparsity ranges K={k} G={g}: bounds {'ok' if tight else 'MISMATCH'}, top-k "
            f"{'ok' if same else 'MISMATCH'}, per head {'ok' if heads else 'MISMATCH'}"
        )
    return ok


def max_of_heads(own: torch.Tensor, grouped: torch.Tensor, ranges: torch.Tensor, block: int) -> bool:
    """Per-head kernel scores (B, Hq, Q, N) whose max over each KV group is the grouped
    kernel's (B, Hkv, Q, N) to float32 rounding, with their own per-block bounds."""
    b, hkv, q, n = grouped.shape
    top = own.view(b, hkv, -1, q, n).amax(2)
    close = torch.allclose(top, grouped, rtol=1e-5, atol=1e-5)
    return close and torch.equal(ranges.cpu().long(), block_ranges(own.cpu(), block))


def main() -> int:
    if not torch.cuda.is_available():
        print("no GPU: nothing to check (the tests cover the interpreted branches)")
        return 0
    device = torch.device("cuda")
    ok = check_hash(device)
    ok &= check_topk(device)
    ok &= check_score_ranges(device)
    print("all ok" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
