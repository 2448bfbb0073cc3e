#!/usr/bin/env bash
# Run 88 (session 15, H200): the runs and the listed entries read in loops of their own
# (fused.RUNS_APART, new) against every entry evaluated both ways; the selection forms of
# benchmarks/kernel_times.py (run 87 found pages + runs 30 % slower than pages alone); Quest and
# streaming_llm, shared and per head, B=1, 10 %, one process per side; the GPU checks.
# RUNS_APART lost (docs/benchmarks.md, runs 86–91) and was taken back: it no longer exists.
set -u
F=maskgraph.sparse.fused.RUNS_APART
python3 benchmarks/gpu_check.py > $OUT/r88-check.log 2>&1; grep -i "mismatch" $OUT/r88-check.log; tail -1 $OUT/r88-check.log
python3 benchmarks/kernel_times.py --parts forms --batches 1 8 --densities 0.1 > $OUT/r88-forms-128k.log 2>&1
python3 benchmarks/kernel_times.py --parts forms --batches 1 --densities 0.1 --kv-len 8192 > $OUT/r88-forms-8k.log 2>&1
grep "runs" $OUT/r88-forms-*.log | sed -E 's/ +\| +/|/g'
G="--graphs quest streaming_llm --densities 0.1 --kv-lens 8192 32768 131072 --batches 1 --gqa shared per_head"
run() { name=$1; shift; timeout 240 python3 benchmarks/sparse.py $G "$@" > $OUT/r88-$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/r88-$name.log | sed -E 's/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; }
run apart
run every --set $F=False
