#!/usr/bin/env bash
# Run 84 (session 14, H200): the GPU checks (per-head scores from the estimators' kernels
# included); gqa="per_head" with each query head scored by its estimator's Triton kernel
# (ops.HEAD_SCORES_BY_KERNEL, new) against the torch scores, 10 %, B=1 (on twice) and B=8, one
# process per side; the shared selections of the same graphs for scale. Arguments: the sides
# to run (default all; the run took two calls: check on-b1 off-b1 on2-b1 on-b8, then off-b8
# shared-b1).
set -u
G="--graphs hashattention double_sparsity quest --densities 0.1 --kv-lens 8192 32768 131072"
F=maskgraph.sparse.ops.HEAD_SCORES_BY_KERNEL
run() { name=$1; shift; timeout 300 python3 benchmarks/sparse.py $G "$@" > $OUT/r84-$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/r84-$name.log | sed -E 's/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; }
side() {
  case $1 in
    check) python3 benchmarks/gpu_check.py > $OUT/r84-check.log 2>&1; tail -2 $OUT/r84-check.log ;;
    on-b1|on2-b1) run $1 --batches 1 --gqa per_head ;;
    off-b1) run $1 --batches 1 --gqa per_head --set $F=False ;;
    on-b8) run $1 --batches 8 --gqa per_head ;;
    off-b8) run $1 --batches 8 --gqa per_head --set $F=False ;;
    shared-b1) run $1 --batches 1 --gqa shared ;;
  esac
}
for s in ${@:-check on-b1 off-b1 on2-b1 on-b8 off-b8 shared-b1}; do side $s; done
