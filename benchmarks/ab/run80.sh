#!/usr/bin/env bash
# Run 80 (session 12, H200): settings A/B at B=1 10 % (one process per side), a HashAttention
# 8K profile with PDL off, then the 512K rows of the matrix (B=1 and B=8) with the shipped code.
set -u
S="python3 benchmarks/sparse.py --densities 0.1 --gqa shared --batches 1"
run() { name=$1; shift; $S "$@" > $OUT/r80-$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/r80-$name.log | sed -E 's/gqa=[a-z-]*  //;s/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; }
M=maskgraph
run base --graphs quest hashattention --kv-lens 8192 131072
run small8k --graphs quest --kv-lens 131072 --set $M.sparse.topk.SMALL_MAX=8192
run qwarps8 --graphs quest --kv-lens 8192 131072 --set $M.ops.zoo.quest.QUEST_WARPS=8
run merge8 --graphs hashattention --kv-lens 8192 131072 --set $M.sparse.fused.MERGE_PARTS=8
run base2 --graphs quest hashattention --kv-lens 8192 131072
run prof --graphs hashattention quest --kv-lens 8192 --profile 12 --set $M.triton_util.PDL=False
grep -A14 "### profile" $OUT/r80-prof.log | cut -c1-150
mkdir -p $OUT/k512b1 $OUT/k512b8
OUT=$OUT/k512b1 python3 benchmarks/sparse.py --batches 1 --kv-lens 524288 --gqa shared > $OUT/r80-512k-b1.log 2>&1; tail -2 $OUT/r80-512k-b1.log
OUT=$OUT/k512b8 timeout 200 python3 benchmarks/sparse.py --batches 8 --kv-lens 524288 --gqa shared > $OUT/r80-512k-b8.log 2>&1; tail -2 $OUT/r80-512k-b8.log
grep -h "^graph=" $OUT/r80-512k-b1.log $OUT/r80-512k-b8.log | sed -E 's/gqa=[a-z-]*  //;s/n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'
