"""Registers and stack bytes (spills) of every Triton kernel as compiled for an H100 (sm_90).

No GPU needed: Triton compiles to a cubin here (as ``tests/sparse/test_triton_compile.py`` does, over
the same list of kernels and specialisations) and ``cuobjdump --dump-resource-usage``, shipped
with Triton, reads each cubin's registers a thread and stack bytes. A kernel at 255 registers
with stack bytes spills, and a kernel that spills in its inner loop runs markedly slower.
Check a variant here before timing it on a GPU.

    python benchmarks/registers.py                        # every kernel at 4 warps
    python benchmarks/registers.py gather_decode --warps 4 8
    PYTHONPATH=/tmp/t36lib python benchmarks/registers.py  # another Triton (pip --target)

Prints a Markdown table last.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported: compile, not interpret

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "sparse"), str(Path(__file__).resolve().parent)]

from common import print_table  # noqa: E402


def resource_usage(cubin: bytes, cuobjdump: Path) -> tuple[int, int]:
    """(registers a thread, stack bytes a thread) of a cubin's kernel."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run(
            [str(cuobjdump), "--dump-resource-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
    found = re.search(r"REG:(\d+).*?STACK:(\d+)", text)
    if found is None:
        raise RuntimeError(f"no resource usage in cuobjdump's output:\n{text}")
    return int(found.group(1)), int(found.group(2))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "names", nargs="*", help="kernel names (default: every kernel of tests/sparse/test_triton_compile.py)"
    )
    ap.add_argument("--warps", nargs="*", type=int, default=[4], help="num_warps to compile each at")
    ap.add_argument("--stages", type=int, default=2, help="num_stages (gather_decode ships 2)")
    args = ap.parse_args(argv)

    import triton
    from test_triton_compile import KERNELS, sig
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    known = {k[1] for k in KERNELS}
    unknown = sorted(set(args.names) - known)
    if unknown:
        ap.error(f"unknown kernel(s) {unknown}; known: {sorted(known)}")
    print(f"triton {triton.__version__}, sm_90", flush=True)
    rows = []
    for module, name, signature, constants in KERNELS:
        if args.names and name not in args.names:
            continue
        body = getattr(importlib.import_module(module), name)
        if "PDL" in inspect.signature(body).parameters:
            signature, constants = signature + " PDL:constexpr", {**constants, "PDL": True}
        source = ASTSource(fn=triton.jit(body), signature=sig(signature), constexprs=constants)
        for warps in args.warps:
            options = {"num_warps": warps, "num_stages": args.stages}
            compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
            regs, stack = resource_usage(compiled.asm["cubin"], cuobjdump)
            shown = {k: v for k, v in constants.items() if k != "PDL"}
            rows.append(
                dict(
                    kernel=name,
                    constants=" ".join(f"{k}={v}" for k, v in shown.items()),
                    warps=warps,
                    registers=regs,
                    stack_bytes=stack,
                    spills="yes" if stack else "",
                )
            )
            print(f"{name} warps={warps}: {regs} registers, {stack} stack bytes", flush=True)
    print("\n## registers a thread, sm_90 (stack bytes > 0: spilled)")
    print_table(rows, ["kernel", "warps", "registers", "stack_bytes", "spills", "constants"])
    return rows


if __name__ == "__main__":
    main()
