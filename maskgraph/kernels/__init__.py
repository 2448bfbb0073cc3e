"""maskgraph's Triton kernels, one module per family, and their jitting.

The kernel modules import ``triton.language`` at the top, so they are imported only where
Triton is installed, and never by the rest of maskgraph directly: a launch names its kernel by
this package's module constant and the kernel's name, ``jitted(FUSED, "gather_decode")``.
Kernel bodies are left undecorated (helpers carry ``@triton.jit``); :func:`jit_all` jits them.
Triton decides between compiling and interpreting when a function is jitted, and jits its own
library functions when it is first imported, so the test suite turns the interpreter on
(``TRITON_INTERPRET=1``) before anything imports Triton (``tests/conftest.py``).

This package imports nothing of maskgraph's operators or lowering; kernel modules import
each other's public names only.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any

import torch

from ..errors import NotSupportedError
from ..triton_util import interpreting, triton_installed

#: The kernel modules, by what they serve.
DOUBLE_SPARSITY = f"{__name__}.double_sparsity"  # Double Sparsity's label scores
FUSED = f"{__name__}.fused"  # sparse mode's gather-attention over listed keys
HASHATTENTION = f"{__name__}.hashattention"  # HashAttention's signatures and agreement scores
QUEST = f"{__name__}.quest"  # Quest's page bounds and page scores
TOPK = f"{__name__}.topk"  # the Triton top-k selection
#: Modules of ``@triton.jit`` helpers only (nothing to launch).
HELPERS = (f"{__name__}.group", f"{__name__}.keymask", f"{__name__}.pdl")
LAUNCHED = (DOUBLE_SPARSITY, FUSED, HASHATTENTION, QUEST, TOPK)

#: Jitted kernels by (module, name, interpreting): filled eagerly (:func:`jit_all`), so that
#: code torch.compile traces finds a kernel by a dict lookup (an import cannot be traced).
_JITTED: dict[tuple[str, str, bool], Any] = {}


def kernel_modules() -> list[str]:
    """The names of the kernel modules in this package (helpers included)."""
    folder = str(Path(__file__).resolve().parent)
    return sorted(f"{__name__}.{m.name}" for m in pkgutil.iter_modules([folder]))


def jit_all() -> None:
    """Jit every kernel of every kernel module (their undecorated functions; helpers carry
    ``@triton.jit`` already) for the current interpreter setting. Idempotent."""
    if not triton_installed():
        return
    import triton

    interpret = interpreting()
    for module in kernel_modules():
        mod = importlib.import_module(module)
        for name, fn in vars(mod).items():
            if (
                inspect.isfunction(fn)
                and fn.__module__ == module
                and (module, name, interpret) not in _JITTED
            ):
                # arguments a kernel marks as varying from call to call (a decode's positions):
                # compiled once, not once per value of 1 or per divisibility by 16
                specialize = getattr(fn, "do_not_specialize", None)
                _JITTED[(module, name, interpret)] = triton.jit(fn, do_not_specialize=specialize)


def jitted(module: str, name: str):
    """``triton.jit`` of kernel ``name`` of ``module`` (one of :data:`LAUNCHED`), made once per
    interpreter setting."""
    key = (module, name, interpreting())
    if key not in _JITTED:
        if torch.compiler.is_compiling():
            raise NotSupportedError(
                f"Triton kernel {module}.{name} was not jitted before torch.compile traced a call "
                "(jit_all() runs when a sparse graph is compiled; was TRITON_INTERPRET changed since?)"
            )
        jit_all()
    if key not in _JITTED:
        raise NotSupportedError(f"no Triton kernel {name!r} in {module} (kernel modules: {kernel_modules()})")
    return _JITTED[key]
