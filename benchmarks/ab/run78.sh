#!/usr/bin/env bash
# Run 78: A/B of this session's switches (one host, one process per side), B=1 10 %.
set -u
S="python3 benchmarks/sparse.py --batches 1 --densities 0.1 --gqa shared"
run() { name=$1; shift; $S "$@" > $OUT/r78-$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/r78-$name.log | sed -E 's/gqa=[a-z-]*  //;s/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; }
M=maskgraph
run base --graphs quest double_sparsity hashattention --kv-lens 8192 32768 131072
run A --graphs quest double_sparsity --kv-lens 8192 32768 131072 --set $M.ops.zoo.double_sparsity.DS_FLOAT_BITS=True $M.sparse.topk.SORT_MAX=2048
run R2 --graphs quest double_sparsity --kv-lens 8192 131072 --set $M.sparse.topk.RESOLVE_LAUNCHES=2
run R1 --graphs quest double_sparsity --kv-lens 8192 131072 --set $M.sparse.topk.RESOLVE_LAUNCHES=1
run M4 --graphs hashattention quest --kv-lens 8192 131072 --set $M.sparse.fused.MERGE_PARTS=4
run base2 --graphs quest double_sparsity hashattention --kv-lens 8192 32768 131072
python3 benchmarks/gpu_check.py > $OUT/r78-check.log 2>&1; tail -3 $OUT/r78-check.log
