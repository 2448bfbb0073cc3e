"""Triton, optionally: whether it is installed, whether its interpreter is on, and the launch
arguments of programmatic dependent launch. The kernels and their jitting are in
:mod:`maskgraph.kernels`.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

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


#: Launch maskgraph's Triton kernels with programmatic dependent launch where the GPU has it
#: (compute capability 9.0 on): a kernel's programs are placed while the one before it
#: finishes, and wait there (:mod:`maskgraph.kernels.pdl`). Only launches of at most one
#: program per streaming multiprocessor (times PDL_PROGRAMS_PER_SM) take it: programs placed
#: early crowd onto the multiprocessors the kernel before leaves free (large launches lose
#: time), while small launches gain.
PDL_PROGRAMS_PER_SM = 1


@functools.cache
def _device_facts(index: int) -> tuple[int, int]:
    """(major compute capability, streaming multiprocessors) of CUDA device ``index``."""
    props = torch.cuda.get_device_properties(index)
    return props.major, props.multi_processor_count


def pdl(device: torch.device, programs: int) -> dict:
    """Launch arguments for a kernel of ``programs`` programs that starts with
    ``maskgraph.kernels.pdl.enter(PDL)``: programmatic dependent launch on CUDA devices of compute
    capability 9.0 on where the kernels are compiled (not interpreted) and
    the launch has at most PDL_PROGRAMS_PER_SM programs per multiprocessor; otherwise a plain
    launch. Traced by torch.compile, always a plain launch: inductor cannot see through the
    prologue's inline assembly and would copy every tensor the kernel takes."""
    if torch.compiler.is_compiling():
        return {"PDL": False}
    if device.type == "cuda" and not interpreting():
        major, sms = _device_facts(device.index if device.index is not None else torch.cuda.current_device())
        if major >= 9 and programs <= sms * PDL_PROGRAMS_PER_SM:
            return {"PDL": True, "launch_pdl": True}
    return {"PDL": False}
