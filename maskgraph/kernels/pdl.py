"""The prologue of every maskgraph Triton kernel: programmatic dependent launch (Hopper on).

Launched with ``launch_pdl`` (:func:`maskgraph.triton_util.pdl`), a kernel's programs are
placed on the GPU while the kernel before it in the stream still runs; each waits there
(``griddepcontrol.wait``) until that kernel has finished and its writes are visible, then lets
the next kernel be placed in turn. The wait comes before anything else, in every program, so
that a kernel never finishes before the one it follows (a later kernel waits only on its
direct predecessor). Imported only by the other kernel modules of :mod:`maskgraph.kernels`, where Triton is installed.
"""

import triton
import triton.language as tl


@triton.jit
def enter(PDL: tl.constexpr):
    """Wait for the previous kernel in the stream, then allow the next one to be placed (no-op
    unless ``PDL``)."""
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
