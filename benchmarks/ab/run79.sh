#!/usr/bin/env bash
# Run 79 (session 12, H200): the GPU checks; the session's switches A/B against session 11's
# settings and against the score kernels' ranges off (B=1 10 %, one process per side); then the
# matrix (8K, 32K, 128K; B=1 and B=8; 2 / 5 / 10 %) with the shipped code.
set -u
S="python3 benchmarks/sparse.py --densities 0.1 --gqa shared --batches 1"
run() { name=$1; shift; $S "$@" > $OUT/r79-$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/r79-$name.log | sed -E 's/gqa=[a-z-]*  //;s/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; }
M=maskgraph
python3 benchmarks/gpu_check.py > $OUT/r79-check.log 2>&1; tail -4 $OUT/r79-check.log
G="--graphs quest double_sparsity hashattention --kv-lens 8192 32768 131072"
run base $G
run s11 $G --set $M.sparse.topk.SORT_MAX=0 $M.sparse.topk.RESOLVE_LAUNCHES=3 $M.sparse.fused.MERGE_PARTS=1 $M.sparse.ops.RANGES_FROM_SCORES=False
run noranges --graphs quest double_sparsity --kv-lens 8192 131072 --set $M.sparse.ops.RANGES_FROM_SCORES=False
run base2 $G
mkdir -p $OUT/b1 $OUT/b8
OUT=$OUT/b1 python3 benchmarks/sparse.py --batches 1 --kv-lens 8192 32768 131072 --gqa shared > $OUT/r79-b1.log 2>&1; tail -3 $OUT/r79-b1.log
OUT=$OUT/b8 python3 benchmarks/sparse.py --batches 8 --kv-lens 8192 32768 131072 --gqa shared > $OUT/r79-b8.log 2>&1; tail -3 $OUT/r79-b8.log
grep "^graph=" $OUT/r79-b1.log $OUT/r79-b8.log | sed -E 's/gqa=[a-z-]*  //;s/n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'
