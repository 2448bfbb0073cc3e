"""Triton, optionally: whether it is installed, whether its interpreter is on, lazy jitting.

Kernel bodies live in modules that import ``triton.language`` at the top (``*_kernel.py``) and
are left undecorated; :func:`jitted` imports such a module and jits a function of it on first
use. Triton decides between compiling and interpreting when a function is jitted, and jits
its own library functions when it is first imported, so the test suite turns the interpreter
on (``TRITON_INTERPRET=1``) before anything imports Triton (``tests/conftest.py``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util

import torch


@functools.cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """True when Triton runs kernels through its interpreter (on the CPU)."""
    from triton import knobs

    return bool(knobs.runtime.interpret)


def usable(device: torch.device) -> bool:
    """True when Triton kernels can run on ``device``: CUDA with Triton installed, or any
    device while Triton's interpreter is on."""
    if not triton_installed():
        return False
    return device.type == "cuda" or interpreting()


@functools.cache
def _jit(module: str, name: str, interpret: bool):
    import triton

    return triton.jit(getattr(importlib.import_module(module), name))


def jitted(module: str, name: str):
    """``triton.jit`` of ``module.name``, made once per interpreter setting."""
    return _jit(module, name, interpreting())
