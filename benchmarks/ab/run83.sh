#!/usr/bin/env bash
# Run 83 (session 13, H200): key selections read by gather_decode from the top-k's output and
# the runs (KEY_SELECTIONS_IN_KERNEL) against int32 lists; HashAttention and Double Sparsity
# 10 %, B=1 (both sides twice) and B=8, one process per side.
set -u
S="python3 benchmarks/sparse.py --densities 0.1 --gqa shared --graphs hashattention double_sparsity --kv-lens 8192 32768 131072"
run() { name=$1; shift; $S "$@" > $OUT/r83-$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/r83-$name.log | sed -E 's/gqa=[a-z-]*  //;s/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; }
F=maskgraph.sparse.fused.KEY_SELECTIONS_IN_KERNEL
run lists-b1 --batches 1
run runs-b1 --batches 1 --set $F=True
run lists2-b1 --batches 1
run runs2-b1 --batches 1 --set $F=True
run lists-b8 --batches 8
run runs-b8 --batches 8 --set $F=True
