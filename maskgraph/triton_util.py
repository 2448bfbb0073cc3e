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
import inspect
import os
from pathlib import Path
from typing import Any

import torch

from .errors import NotSupportedError

#: Read once at import, so that compiled code (dynamo) sees plain constants.
_INSTALLED = importlib.util.find_spec("triton") is not None
_INTERPRET_AT_IMPORT = os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_installed() -> bool:
    return _INSTALLED


def interpreting() -> bool:
    """True when Triton runs kernels through its interpreter (on the CPU). Traced by
    torch.compile, the setting at import (Triton's knob cannot be traced)."""
    if torch.compiler.is_compiling():
        return _INTERPRET_AT_IMPORT
    from triton import knobs

    return bool(knobs.runtime.interpret)


def usable(device: torch.device) -> bool:
    """True when Triton kernels can run on ``device``: CUDA with Triton installed, or any
    device when ``TRITON_INTERPRET=1`` was set before maskgraph was imported. Traceable by
    torch.compile (module constants only)."""
    return _INSTALLED and (device.type == "cuda" or _INTERPRET_AT_IMPORT)


#: Jitted kernels by (module, name, interpreting): filled eagerly (:func:`jit_all`), so that
#: code torch.compile traces finds a kernel by a dict lookup (an import cannot be traced).
_JITTED: dict[tuple[str, str, bool], Any] = {}


def kernel_modules() -> list[str]:
    """The names of maskgraph's kernel modules (``*_kernel.py``, anywhere in the package)."""
    root = Path(__file__).resolve().parent
    return sorted(
        ".".join(("maskgraph", *p.relative_to(root).with_suffix("").parts)) for p in root.rglob("*_kernel.py")
    )


def jit_all() -> None:
    """Jit every kernel of every kernel module (their undecorated functions; helpers carry
    ``@triton.jit`` already) for the current interpreter setting. Idempotent."""
    if not _INSTALLED:
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
    """``triton.jit`` of ``module.name``, made once per interpreter setting."""
    key = (module, name, interpreting())
    if key not in _JITTED:
        if torch.compiler.is_compiling():
            raise NotSupportedError(
                f"Triton kernel {module}.{name} was not jitted before torch.compile traced a call "
                "(jit_all() runs when a sparse graph is compiled; was TRITON_INTERPRET changed since?)"
            )
        jit_all()
    return _JITTED[key]


#: Launch maskgraph's Triton kernels with programmatic dependent launch where the GPU has it
#: (compute capability 9.0 on): a kernel's programs are placed while the one before it
#: finishes, and wait there (:mod:`maskgraph.pdl_kernel`). Only launches of at most one
#: program per streaming multiprocessor (times PDL_PROGRAMS_PER_SM) take it: programs placed
#: early crowd onto the multiprocessors the kernel before leaves free (a B=8 8K Double Sparsity
#: call's 512-program top-k launches lost 15 µs on an H100), while B=1 calls gain 2-4 µs.
PDL_PROGRAMS_PER_SM = 1


@functools.cache
def _device_facts(index: int) -> tuple[int, int]:
    """(major compute capability, streaming multiprocessors) of CUDA device ``index``."""
    props = torch.cuda.get_device_properties(index)
    return props.major, props.multi_processor_count


def pdl(device: torch.device, programs: int) -> dict:
    """Launch arguments for a kernel of ``programs`` programs that starts with
    ``pdl_kernel.enter(PDL)``: programmatic dependent launch on CUDA devices of compute
    capability 9.0 on where the kernels are compiled (not interpreted) and
    the launch has at most PDL_PROGRAMS_PER_SM programs per multiprocessor; otherwise a plain
    launch."""
    if device.type == "cuda" and not interpreting():
        major, sms = _device_facts(device.index if device.index is not None else torch.cuda.current_device())
        if major >= 9 and programs <= sms * PDL_PROGRAMS_PER_SM:
            return {"PDL": True, "launch_pdl": True}
    return {"PDL": False}
