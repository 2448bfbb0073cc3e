"""Profiling aid: ways to compute float32-accumulated GQA logits from bf16 q/k on the GPU.

Compares time and error (vs float64) of: (a) upcast then fp32 matmul, (b) bf16 matmul then
upcast (bf16-rounded logits), (c) bmm with out_dtype=float32, (d) broadcast-multiply-sum
compiled by inductor (fuses the upcast into a reduction). Prints a table last.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, peak_extra_mib, print_table, time_call  # noqa: E402


def v_upcast(q, k):
    return torch.matmul(q.float(), k.float().transpose(-1, -2))


def v_bf16(q, k):
    return torch.matmul(q, k.transpose(-1, -2)).float()


def v_outdtype(q, k):
    b, h, m, d = q.shape
    n = k.shape[2]
    return torch.bmm(
        q.reshape(b * h, m, d), k.reshape(b * h, n, d).transpose(1, 2), out_dtype=torch.float32
    ).view(b, h, m, n)


def v_reduce(q, k):
    return (q.float().unsqueeze(-2) * k.float().unsqueeze(-3)).sum(-1)


def main() -> None:
    dev = torch.device("cuda")
    rows = []
    compiled_reduce = torch.compile(v_reduce, dynamic=True)
    compiled_upcast = torch.compile(v_upcast, dynamic=True)
    for K in (32768, 131072):
        for M in (4, 512):  # G*Q rows per KV head: decode (G=4, Q=1) and Q=128
            q = torch.randn(1, 8, M, 128, device=dev, dtype=torch.bfloat16)
            k = torch.randn(1, 8, K, 128, device=dev, dtype=torch.bfloat16)
            ref = torch.matmul(q.double(), k.double().transpose(-1, -2))
            for name, fn in [
                ("upcast", v_upcast),
                ("upcast_compiled", compiled_upcast),
                ("bf16", v_bf16),
                ("out_dtype", v_outdtype),
                ("reduce_compiled", compiled_reduce),
            ]:
                if name == "reduce_compiled" and M > 64:
                    continue
                try:
                    out = fn(q, k)
                    err = ((out.double() - ref).norm() / ref.norm()).item()
                    t = time_call(lambda: fn(q, k), dev, reps=30)
                    rows.append(
                        dict(
                            variant=name,
                            K=K,
                            rows=M,
                            ms=t,
                            rel_err=err,
                            mib=peak_extra_mib(lambda: fn(q, k), dev),
                        )
                    )
                except Exception as exc:
                    rows.append(
                        dict(variant=name, K=K, rows=M, error=f"{type(exc).__name__}: {str(exc)[:60]}")
                    )
    print(f"\n## logits variants — {device_name(dev)}")
    print_table(rows, ["variant", "K", "rows", "ms", "rel_err", "mib", "error"])


if __name__ == "__main__":
    main()
