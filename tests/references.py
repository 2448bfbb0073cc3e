"""Plain float64 references shared by test modules."""

from __future__ import annotations

import torch


def reference_gathered(q, k, v, am, scaling, idx, valid, sinks):
    """Float64 softmax attention of each query over its valid listed keys (loops, no tricks).

    q (B, Hq, Q, D); k, v (B, Hkv, K, D); am additive (B, 1|Hq, Q, K) or None; idx, valid
    (B, Hsel, Q, n); sinks (Hq,) or None. A row with no finite logit stays 0."""
    b, hq, nq, d = q.shape
    hsel, hkv = idx.shape[1], k.shape[1]
    out = torch.zeros(b, hq, nq, d, dtype=torch.float64)
    for bi in range(b):
        for h in range(hq):
            sel = h * hsel // hq
            kv = sel * hkv // hsel
            for i in range(nq):
                keys = [int(j) for j, ok in zip(idx[bi, sel, i], valid[bi, sel, i]) if ok]
                s = (k[bi, kv, keys].double() @ q[bi, h, i].double()) * scaling
                if am is not None:
                    s = s + am[bi, h if am.shape[1] > 1 else 0, i, keys].double()
                parts = [s] if sinks is None else [s, sinks[h : h + 1].double()]
                allv = torch.cat(parts)
                if not torch.isfinite(allv).any():
                    continue
                p = torch.softmax(allv, 0)[: len(keys)]
                out[bi, h, i] = p @ v[bi, kv, keys].double()
    return out


def dropped_by_runs(rows: int, n: int, qc: int, block: int, num_keys: int, runs) -> torch.Tensor:
    """Bool (rows, n): score i of row r stands for keys i·block .. i·block + block − 1 below
    num_keys, and is dropped when each of them is in some run [lo + slope·q, hi + slope·q)
    for the row's query q = r mod qc — checked key by key."""
    out = torch.zeros(rows, n, dtype=torch.bool)
    for r in range(rows):
        q = r % qc
        for i in range(n):
            keys = range(i * block, min(i * block + block, num_keys))
            out[r, i] = all(any(lo + sl * q <= j < hi + sl * q for lo, hi, sl in runs) for j in keys)
    return out


def block_ranges(scores: torch.Tensor, block: int) -> torch.Tensor:
    """(…, ⌈N / block⌉, 2) int64 keys (lo, hi) of each block of ``block`` scores (…, N) along
    the last dimension: the int32 bit patterns of the smallest and largest finite score made
    order-keeping (negative floats' bits flipped below the sign), −0 read as +0 and NaN as
    −inf; (2**31 − 1, −2**31) for a block with no finite score."""
    x = scores.float().clone()
    x[x == 0] = 0.0
    finite = x > float("-inf")
    bits = x.view(torch.int32).long()
    keys = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    n = x.shape[-1]
    blocks = -(-n // block)
    pad = blocks * block - n
    lo = torch.nn.functional.pad(torch.where(finite, keys, 2**31 - 1), (0, pad), value=2**31 - 1)
    hi = torch.nn.functional.pad(torch.where(finite, keys, -(2**31)), (0, pad), value=-(2**31))
    shape = (*x.shape[:-1], blocks, block)
    return torch.stack([lo.view(shape).amin(-1), hi.view(shape).amax(-1)], -1)
