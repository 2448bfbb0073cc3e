#!/usr/bin/env bash
# Run 82 (session 13, H200): select_attend with 1, 2 or 4 programs per segment (SELECT_PARTS)
# against the top-k's write, lists and gather_decode (SELECT_IN_ATTENTION off); HashAttention
# 10 %, B=1 and B=8, one process per side; the GPU checks first (SELECT_PARTS=2).
set -u
S="python3 benchmarks/sparse.py --densities 0.1 --gqa shared --graphs hashattention --kv-lens 8192 32768 131072"
run() { name=$1; shift; $S "$@" > $OUT/r82-$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/r82-$name.log | grep -v "dense" | sed -E 's/gqa=[a-z-]*  //;s/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; }
M=maskgraph.sparse.fused
python3 benchmarks/gpu_check.py > $OUT/r82-check.log 2>&1; tail -4 $OUT/r82-check.log
for b in 1 8; do
  run off-b$b --batches $b --set $M.SELECT_IN_ATTENTION=False
  run p1-b$b --batches $b --set $M.SELECT_PARTS=1
  run p2-b$b --batches $b --set $M.SELECT_PARTS=2
  run p4-b$b --batches $b --set $M.SELECT_PARTS=4
  run off2-b$b --batches $b --set $M.SELECT_IN_ATTENTION=False
done
grep -h "^graph=dense" $OUT/r82-off-b1.log $OUT/r82-off-b8.log | sed -E 's/gqa=[a-z-]*  //;s/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'
