"""A torch function mode that fails on every read of a tensor value on the host."""

from __future__ import annotations

import torch


class NoHostReads(torch.overrides.TorchFunctionMode):
    """Raises on anything that reads a tensor's value on the host or sizes an output by data
    (each is a device sync on a GPU, and an error while a CUDA graph is recorded)."""

    READS = {
        torch.Tensor.item,
        torch.Tensor.tolist,
        torch.Tensor.__bool__,
        torch.Tensor.__int__,
        torch.Tensor.__float__,
        torch.Tensor.__index__,
        torch.Tensor.nonzero,
        torch.nonzero,
        torch.Tensor.unique,
        torch.unique,
        torch.masked_select,
        torch.Tensor.masked_select,
        torch.Tensor.cpu,
    }

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            raise AssertionError(f"host read: {getattr(func, '__name__', func)}")
        return func(*args, **(kwargs or {}))
