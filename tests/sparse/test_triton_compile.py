"""Every Triton kernel compiles for an H100 (sm_90) on this machine, without a GPU.

Triton's interpreter (how the other tests run the kernels on the CPU) accepts code that the
compiler refuses — a plain Python constant read inside a kernel, for one (the first H100 run
of the Triton top-k failed so). Compiling to a cubin for sm_90 here catches that before the
GPU does. The compiler runs in a subprocess without ``TRITON_INTERPRET`` (with it, Triton
turns every ``@triton.jit`` helper into an interpreted function when its module is imported).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from maskgraph.triton_util import triton_installed

#: The nine scalars of a top-k kernel's prior runs (``topk.exclusion_args``).
EX = " ".join(f"ex{i}:i32" for i in range(9))


def sig(text: str) -> dict[str, str]:
    """'a:*fp32 b:i32' -> {'a': '*fp32', 'b': 'i32'}."""
    return dict(item.split(":") for item in text.split())


I32 = lambda names: " ".join(f"{n}:i32" for n in names.split())  # noqa: E731

GATHER = (
    "Q:*bf16 K:*bf16 V:*bf16 IDX:*i64 VALS:*fp32 AM:*bf16 ACC:*fp32 M:*fp32 L:*fp32 scale:fp32 "
    + I32(
        "n blocks_per_split n_keys sqb sqh sqq skb skh skk svb svh svk sib sih siq svlb svlh svlq "
        "sab sah saq sak hsel qc hkv g_heads d_real r0s r0n r0lo r0hi r0sl r1s r1n r1lo r1hi r1sl"
    )
    + " HAS_AM:constexpr UPCAST:constexpr GP:constexpr BLOCK:constexpr DP:constexpr NR:constexpr "
    "PAGE:constexpr HAS_VALS:constexpr WIDE:constexpr ENTRY_ROWS:constexpr"
)

KERNELS = [
    (
        "maskgraph.kernels.topk",
        "select_range",
        "S:*fp32 RANGE:*i32 n:i32 stride:i32 " + EX + " SEG:constexpr NEX:constexpr",
        {"SEG": 4096, "NEX": 2},
    ),
    (
        "maskgraph.kernels.topk",
        "select_hist",
        "S:*fp32 RANGE:*i32 HIST:*i32 n:i32 stride:i32 nrange:i32 " + EX + " SEG:constexpr NB:constexpr "
        "SR:constexpr INTEGER:constexpr BOUNDED:constexpr NEX:constexpr",
        {"SEG": 4096, "NB": 64, "SR": 256, "INTEGER": False, "BOUNDED": False, "NEX": 1},
    ),
    (
        "maskgraph.kernels.topk",
        "select_choose",
        "RANGE:*i32 STATE_PTR:*i64 HIST:*i32 OFFS:*i32 VALS:*fp32 IDX:*i64 COUNT:*i64 nseg:i32 k:i32 "
        "nrange:i32 SP:constexpr NB:constexpr INTEGER:constexpr HAS_COUNT:constexpr FILL:constexpr "
        "SR:constexpr BOUNDED:constexpr",
        {"SP": 64, "NB": 128, "INTEGER": True, "HAS_COUNT": True, "FILL": 1024, "SR": 64, "BOUNDED": True},
    ),
    (
        "maskgraph.kernels.topk",
        "select_write",
        "S:*fp32 RANGE:*i32 STATE_PTR:*i64 OFFS:*i32 VALS:*fp32 IDX:*i64 CAND:*i32 CANDV:*fp32 HIST:*i32 "
        "COUNT:*i64 n:i32 k:i32 stride:i32 nrange:i32 " + EX + " SEG:constexpr NB:constexpr SP:constexpr "
        "INTEGER:constexpr SR:constexpr BOUNDED:constexpr NEX:constexpr CHOOSE:constexpr HAS_COUNT:constexpr",
        {
            "SEG": 4096,
            "NB": 64,
            "SP": 32,
            "INTEGER": True,
            "SR": 32,
            "BOUNDED": True,
            "NEX": 2,
            "CHOOSE": True,
            "HAS_COUNT": True,
        },
    ),
    (
        "maskgraph.kernels.topk",
        "select_write",
        "S:*fp32 RANGE:*i32 STATE_PTR:*i64 OFFS:*i32 VALS:*fp32 IDX:*i64 CAND:*i32 CANDV:*fp32 HIST:*i32 "
        "COUNT:*i64 n:i32 k:i32 stride:i32 nrange:i32 " + EX + " SEG:constexpr NB:constexpr SP:constexpr "
        "INTEGER:constexpr SR:constexpr BOUNDED:constexpr NEX:constexpr CHOOSE:constexpr HAS_COUNT:constexpr",
        {
            "SEG": 2048,
            "NB": 128,
            "SP": 64,
            "INTEGER": False,
            "SR": 512,
            "BOUNDED": False,
            "NEX": 0,
            "CHOOSE": False,
            "HAS_COUNT": False,
        },
    ),
    (  # float scores, the bin chosen in the write
        "maskgraph.kernels.topk",
        "select_write",
        "S:*fp32 RANGE:*i32 STATE_PTR:*i64 OFFS:*i32 VALS:*fp32 IDX:*i64 CAND:*i32 CANDV:*fp32 HIST:*i32 "
        "COUNT:*i64 n:i32 k:i32 stride:i32 nrange:i32 " + EX + " SEG:constexpr NB:constexpr SP:constexpr "
        "INTEGER:constexpr SR:constexpr BOUNDED:constexpr NEX:constexpr CHOOSE:constexpr HAS_COUNT:constexpr",
        {
            "SEG": 1024,
            "NB": 128,
            "SP": 8,
            "INTEGER": False,
            "SR": 8,
            "BOUNDED": False,
            "NEX": 1,
            "CHOOSE": True,
            "HAS_COUNT": False,
        },
    ),
    (
        "maskgraph.kernels.topk",
        "select_resolve_lanes",
        "STATE_PTR:*i64 VALS:*fp32 IDX:*i64 CAND:*i32 CANDV:*fp32 k:i32 stride:i32 LOW:constexpr "
        "LANES:constexpr",
        {"LOW": 512, "LANES": 2048},
    ),
    (
        "maskgraph.kernels.topk",
        "select_resolve",
        "STATE_PTR:*i64 VALS:*fp32 IDX:*i64 CAND:*i32 CANDV:*fp32 k:i32 stride:i32 SMALL:constexpr "
        "BLOCK:constexpr",
        {"SMALL": 512, "BLOCK": 4096},
    ),
    (
        "maskgraph.kernels.topk",
        "select_resolve_tiers",
        "STATE_PTR:*i64 VALS:*fp32 IDX:*i64 CAND:*i32 CANDV:*fp32 k:i32 stride:i32 SMALL:constexpr "
        "MID:constexpr BLOCK:constexpr REST:constexpr",
        {"SMALL": 512, "MID": 2048, "BLOCK": 4096, "REST": True},
    ),
    (
        "maskgraph.kernels.topk",
        "select_small",
        "S:*fp32 VALS:*fp32 IDX:*i64 COUNT:*i64 n:i32 k:i32 stride:i32 " + EX + " BLOCK:constexpr "
        "HAS_COUNT:constexpr NEX:constexpr",
        {"BLOCK": 8192, "HAS_COUNT": True, "NEX": 2},
    ),
    (
        "maskgraph.kernels.topk",
        "select_sorted",
        "S:*fp32 VALS:*fp32 IDX:*i64 COUNT:*i64 n:i32 k:i32 stride:i32 " + EX + " BLOCK:constexpr "
        "HAS_COUNT:constexpr NEX:constexpr",
        {"BLOCK": 512, "HAS_COUNT": True, "NEX": 2},
    ),
    (
        "maskgraph.kernels.quest",
        "quest_page_update",
        "K:*bf16 LO:*bf16 HI:*bf16 NUM:*i64 " + I32("pages new page_size hkv dim skb skh skk") + " "
        "PS:constexpr DIM:constexpr",
        {"PS": 16, "DIM": 128},
    ),
    (
        "maskgraph.kernels.fused",
        "gather_decode",
        GATHER,
        {  # transformers' mask, one row for every head
            "HAS_AM": 1,
            "UPCAST": False,
            "GP": 16,
            "BLOCK": 64,
            "DP": 128,
            "NR": 2,
            "PAGE": 16,
            "HAS_VALS": True,
            "WIDE": False,
            "ENTRY_ROWS": True,
        },
    ),
    (  # 64-bit key offsets, a mask row per head
        "maskgraph.kernels.fused",
        "gather_decode",
        GATHER,
        {"HAS_AM": 2, "UPCAST": False, "GP": 16, "BLOCK": 64, "DP": 128, "NR": 2}
        | {"PAGE": 16, "HAS_VALS": True, "WIDE": True, "ENTRY_ROWS": False},
    ),
    (  # a float64 scale: how inductor passes a Python float when it compiles the launch into a step
        "maskgraph.kernels.fused",
        "gather_decode",
        GATHER.replace("scale:fp32", "scale:fp64"),
        {"HAS_AM": 0, "UPCAST": False, "GP": 16, "BLOCK": 64, "DP": 128, "NR": 2}
        | {"PAGE": 1, "HAS_VALS": False, "WIDE": False, "ENTRY_ROWS": False},
    ),
    (
        "maskgraph.kernels.fused",
        "merge_splits",
        "ACC:*fp32 M:*fp32 L:*fp32 SINKS:*fp32 OUT:*bf16 EMPTY:*i64 "
        + I32("splits g_heads hsel qc d_real sob soh soq")
        + " HAS_SINKS:constexpr BLOCK_S:constexpr DP:constexpr",
        {"HAS_SINKS": True, "BLOCK_S": 64, "DP": 128},
    ),
    (
        "maskgraph.kernels.quest",
        "quest_group_scores",
        "Q:*bf16 LO:*bf16 HI:*bf16 OUT:*fp32 RANGES:*i32 AM:*fp32 "
        + I32("n_pages n_q hkv g_heads kv_div dim")
        + " scaling:fp32 "
        + I32("n_keys page_size sab sah saq")
        + " "
        + EX
        + " BLOCK:constexpr DIM:constexpr PS:constexpr HAS_AM:constexpr NEX:constexpr",
        {"BLOCK": 32, "DIM": 128, "PS": 16, "HAS_AM": False, "NEX": 0},
    ),
    (
        "maskgraph.kernels.quest",
        "quest_group_scores_dot",
        "Q:*bf16 LO:*bf16 HI:*bf16 OUT:*fp32 RANGES:*i32 AM:*fp32 "
        + I32("n_pages n_q hkv g_heads kv_div dim")
        + " scaling:fp32 "
        + I32("n_keys page_size sab sah saq")
        + " "
        + EX
        + " BLOCK:constexpr DIM:constexpr GP:constexpr UPCAST:constexpr EACH_HEAD:constexpr PS:constexpr "
        "HAS_AM:constexpr NEX:constexpr",
        {
            "BLOCK": 64,
            "DIM": 128,
            "GP": 16,
            "UPCAST": False,
            "EACH_HEAD": False,
            "PS": 16,
            "HAS_AM": False,
            "NEX": 0,
        },
    ),
    (
        "maskgraph.kernels.hashattention",
        "hash_group_scores",
        "QW:*i32 KW:*i32 OUT:*fp32 HIST:*i32 AM:*fp32 "
        + I32("n_keys n_q hkv g_heads kv_div n_words hat_bits sab sah saq")
        + " "
        + EX
        + " BLOCK:constexpr HC:constexpr NB:constexpr NEX:constexpr HW_POPC:constexpr HAS_AM:constexpr",
        {"BLOCK": 2048, "HC": 4, "NB": 64, "NEX": 2, "HW_POPC": True, "HAS_AM": False},
    ),
    (
        "maskgraph.kernels.hashattention",
        "hash_words",
        "X:*bf16 W1:*fp32 B1:*fp32 W2:*fp32 B2:*fp32 OUT:*i32 "
        + I32("n heads dim hidden bits n_words sxb sxh sxn")
        + " DP:constexpr HB:constexpr BP:constexpr",
        {"DP": 128, "HB": 32, "BP": 32},
    ),
    (
        "maskgraph.kernels.double_sparsity",
        "ds_group_scores",
        "QL:*bf16 WORDS:*i32 LO:*fp32 STEP:*fp32 OUT:*fp32 RANGES:*i32 AM:*fp32 "
        + I32("n_keys n_q hkv g_heads kv_div n_labels")
        + " scaling:fp32 "
        + I32("sab sah saq")
        + " BLOCK:constexpr GP:constexpr NW:constexpr BITS:constexpr PER:constexpr HAS_AM:constexpr",
        {"BLOCK": 1024, "GP": 4, "NW": 2, "BITS": 4, "PER": 8, "HAS_AM": False},
    ),
]


#: The grouped-score kernels as ``gqa="per_head"`` launches them: one query head a row (the
#: group size 1 becomes a constant, as Triton specialises an argument equal to 1), or Quest's
#: tensor-core kernel writing each head of its group.
PER_HEAD = [
    (module, name, signature.replace("g_heads:i32", "g_heads:constexpr"), {**constants, "g_heads": 1, **one})
    for module, name, signature, constants in KERNELS
    for one in [
        {"quest_group_scores": {}, "hash_group_scores": {"HC": 2}, "ds_group_scores": {"GP": 1}}.get(name)
    ]
    if one is not None
]
PER_HEAD += [
    (module, name, signature, {**constants, "EACH_HEAD": True})
    for module, name, signature, constants in KERNELS
    if name == "quest_group_scores_dot"
]
KERNELS += PER_HEAD
#: The estimators' score kernels applying a padded batch's attention mask themselves (float32,
#: and a 16-bit mask for the grouped launches; Quest's with a sink and a window too).
KERNELS += [
    (module, name, signature.replace("AM:*fp32", f"AM:*{dtype}"), {**constants, "HAS_AM": True, **runs})
    for module, name, signature, constants in KERNELS
    if name in ("quest_group_scores", "quest_group_scores_dot", "hash_group_scores", "ds_group_scores")
    for dtype in ("fp32", "bf16")
    if dtype == "fp32" or "g_heads" not in constants
    for runs in ([{}, {"NEX": 2}] if name.startswith("quest") else [{}])
]


def compile_all(names: list[str]) -> None:
    """Compile the named kernels for sm_90; print "ok NAME" for each (TRITON_INTERPRET unset)."""
    import importlib
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    for module, name, signature, constants in KERNELS:
        if name in names:
            body = getattr(importlib.import_module(module), name)
            pdl = "PDL" in inspect.signature(body).parameters
            if pdl:  # compiled as launched on an H100: with programmatic dependent launch
                signature, constants = signature + " PDL:constexpr", {**constants, "PDL": True}
            # every parameter up to PDL in the signature: Triton 3.9 matches them by position
            source = ASTSource(fn=triton.jit(body), signature=sig(signature), constexprs=constants)
            compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
            assert compiled.asm["cubin"], name
            assert ("griddepcontrol.wait" in compiled.asm["ptx"]) == pdl, name
            print("ok", name, flush=True)


@pytest.mark.slow  # compiling every kernel for the card is the point
@pytest.mark.skipif(not triton_installed(), reason="needs triton (setup.sh --dev)")
def test_every_kernel_compiles_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # the script's folder comes first on its path: the maskgraph under test is this checkout's
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    names = [k[1] for k in KERNELS]
    done = subprocess.run(
        [sys.executable, __file__, *names], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [w for name in names for w in ("ok", name)]


def test_pdl_launches_plain_off_hopper():
    """Programmatic dependent launch only where kernels are compiled for CUDA: a CPU device
    (the interpreter) gets a plain launch with the prologue switched off."""
    from maskgraph.triton_util import pdl

    assert pdl(torch.device("cpu"), 1) == {"PDL": False}
    assert pdl(torch.device("cuda"), 1) == {"PDL": False}  # interpreted here: plain launches


def test_pdl_only_for_launches_of_one_program_per_multiprocessor(monkeypatch):
    """On a compiled Hopper device (faked): launches up to the multiprocessor count take
    programmatic dependent launch, wider ones and pre-Hopper devices a plain launch."""
    from maskgraph import triton_util

    monkeypatch.setattr(triton_util, "interpreting", lambda: False)
    facts = {0: (9, 132), 1: (8, 108)}
    monkeypatch.setattr(triton_util, "_device_facts", lambda index: facts[index])
    on = {"PDL": True, "launch_pdl": True}
    assert triton_util.pdl(torch.device("cuda", 0), 132) == on
    assert triton_util.pdl(torch.device("cuda", 0), 133) == {"PDL": False}
    assert triton_util.pdl(torch.device("cuda", 1), 8) == {"PDL": False}


def test_pdl_launches_plain_inside_torch_compile(monkeypatch):
    """Traced by torch.compile the same Hopper launch is plain: inductor cannot analyse the
    prologue's inline assembly (it would treat every tensor argument as written)."""
    from maskgraph import triton_util

    monkeypatch.setattr(triton_util, "interpreting", lambda: False)
    monkeypatch.setattr(triton_util, "_device_facts", lambda index: (9, 132))

    def flag(x: torch.Tensor) -> torch.Tensor:
        return x + int(triton_util.pdl(torch.device("cuda", 0), 8)["PDL"])

    assert flag(torch.zeros(())).item() == 1
    torch._dynamo.reset()
    assert torch.compile(flag, backend="eager", fullgraph=True)(torch.zeros(())).item() == 0


@pytest.mark.skipif(not triton_installed(), reason="needs triton (setup.sh --dev)")
def test_register_report_reads_the_compiled_kernels():
    """benchmarks/registers.py compiles the named kernels for sm_90 and reads each cubin's
    registers and stack bytes (a kernel's registers are between 1 and 255); a name it does not
    know is refused with the known ones."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = os.path.join(root, "benchmarks", "registers.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(
        [sys.executable, script, "select_sorted"], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    row = [line for line in done.stdout.splitlines() if line.startswith("| select_sorted")]
    assert len(row) == 1
    regs, stack = (int(cell) for cell in row[0].split("|")[3:5])
    assert 1 <= regs <= 255 and stack >= 0
    bad = subprocess.run(
        [sys.executable, script, "no_such_kernel"], capture_output=True, text=True, timeout=300, env=env
    )
    assert bad.returncode != 0 and "no_such_kernel" in bad.stderr and "gather_decode" in bad.stderr


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    compile_all(sys.argv[1:])
