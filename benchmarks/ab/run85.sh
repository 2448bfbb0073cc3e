#!/usr/bin/env bash
# Run 85 (session 14, H200): the GPU checks; Quest under gqa="per_head" with its tensor-core
# kernel writing each head of a KV group (bounds read once per group) against the torch
# scores (ops.HEAD_SCORES_BY_KERNEL=False), 10 %, B=1 and B=8, one process per side.
set -u
G="--graphs quest --gqa per_head --densities 0.1 --kv-lens 8192 32768 131072"
F=maskgraph.sparse.ops.HEAD_SCORES_BY_KERNEL
run() { name=$1; shift; timeout 200 python3 benchmarks/sparse.py $G "$@" > $OUT/r85-$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/r85-$name.log | sed -E 's/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; }
python3 benchmarks/gpu_check.py > $OUT/r85-check.log 2>&1; grep -i "mismatch" $OUT/r85-check.log; tail -1 $OUT/r85-check.log
run on-b1 --batches 1
run off-b1 --batches 1 --set $F=False
run on-b8 --batches 8
run off-b8 --batches 8 --set $F=False
