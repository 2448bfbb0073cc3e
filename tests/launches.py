"""Recording which of the Triton top-k's kernels a call launches (shared by test modules)."""

from __future__ import annotations


def record_topk_launches(monkeypatch) -> list[str]:
    """Make :mod:`maskgraph.lowering.topk` launch its kernels through recorders; returns the list
    the name of each launched kernel is appended to, in launch order."""
    from maskgraph.lowering import topk as triton_topk

    kernels = triton_topk._kernels()
    launched: list[str] = []

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            launched.append(self.kernel.fn.__name__)
            return self.kernel[grid]

    monkeypatch.setattr(triton_topk, "_kernels", lambda: tuple(Recorder(kern) for kern in kernels))
    return launched
