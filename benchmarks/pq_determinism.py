"""PQCache's k-means on the GPU: three fits of the same keys give the same bits.

    python benchmarks/pq_determinism.py      # GPU: B=1, 8 KV heads, 128K keys, D=128, bf16

Codebooks of 256 centroids over 16 sub-spaces, 10 Lloyd iterations (``maskgraph.ops.zoo.pq.fit``);
prints the time of each fit and whether the three fits agree bit for bit.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maskgraph.ops.zoo import pq  # noqa: E402


def main() -> bool:
    if not torch.cuda.is_available():
        raise SystemExit("pq_determinism.py needs a CUDA device (the CPU's adds are ordered anyway)")
    gen = torch.Generator(device="cuda").manual_seed(0)
    keys = torch.randn(1, 8, 131072, 128, device="cuda", generator=gen).to(torch.bfloat16) * 3
    params = dict(pq_group_factor=16, pq_bits=8, kmeans_iter=10, metric="euclidean", seed=0)
    fits = []
    for _ in range(3):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fits.append(pq.fit(keys, params))
        torch.cuda.synchronize()
        print(f"fit (1, 8, 131072, 128): {time.perf_counter() - start:.3f} s", flush=True)
    same = all(torch.equal(c, fits[0][0]) and torch.equal(k, fits[0][1]) for c, k in fits)
    print(f"three fits give the same centroids and codes: {same}")
    return same


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
