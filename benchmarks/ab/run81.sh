#!/usr/bin/env bash
# Run 81 (session 13, H200): the GPU checks (with HashAttention's top-k made inside the
# attention kernel, select_attend); that switch A/B at B=1 and B=8, 10 % (one process per side);
# a HashAttention 8K profile with PDL off; then HashAttention's matrix rows with the shipped code.
set -u
S="python3 benchmarks/sparse.py --densities 0.1 --gqa shared --graphs hashattention"
run() { name=$1; shift; $S "$@" > $OUT/r81-$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/r81-$name.log | sed -E 's/gqa=[a-z-]*  //;s/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; }
M=maskgraph
python3 benchmarks/gpu_check.py > $OUT/r81-check.log 2>&1; tail -5 $OUT/r81-check.log
K="--kv-lens 8192 32768 131072"
run on --batches 1 $K
run off --batches 1 $K --set $M.sparse.fused.SELECT_IN_ATTENTION=False
run on2 --batches 1 $K
run on8 --batches 8 $K
run off8 --batches 8 $K --set $M.sparse.fused.SELECT_IN_ATTENTION=False
run prof --batches 1 --kv-lens 8192 --profile 12 --set $M.triton_util.PDL=False
grep -A12 "### profile" $OUT/r81-prof.log | cut -c1-150
mkdir -p $OUT/m
OUT=$OUT/m timeout 240 python3 benchmarks/sparse.py --graphs hashattention --batches 1 8 --kv-lens 8192 32768 131072 524288 --gqa shared > $OUT/r81-matrix.log 2>&1; tail -2 $OUT/r81-matrix.log
grep "^graph=" $OUT/r81-matrix.log | sed -E 's/gqa=[a-z-]*  //;s/n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'
