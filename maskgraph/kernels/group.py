"""Shared piece of the grouped-score Triton kernels (imported only where Triton is installed)."""

import triton
import triton.language as tl


@triton.jit
def group_coords(n_q, hkv):
    """(query, KV head, batch row as int64) of program axis 0, laid out over (B, Hkv, Q)."""
    row = tl.program_id(0)
    return row % n_q, (row // n_q) % hkv, (row // (n_q * hkv)).to(tl.int64)
