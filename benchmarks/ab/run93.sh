#!/usr/bin/env bash
# Run 93 (session 16, H200): gather_decode's last program of a row merges the splits itself
# (fused.MERGE_IN_KERNEL = 64: no merge_splits launch) against the merge launch of its own (0),
# and the group's heads merged in one tile (MERGE_ALL_HEADS); Quest and HashAttention end to
# end, B=1 10 %, 8K and 128K, shared and per head, B=8 shared; one process per side. The GPU
# checks first (the in-kernel merge against the launch, over calls and CUDA graph replays).
set -u
timeout 150 python3 benchmarks/gpu_check.py > $OUT/r93-check.log 2>&1; grep -i "merge in\|mismatch" $OUT/r93-check.log; tail -1 $OUT/r93-check.log
G="--graphs quest hashattention --densities 0.1 --kv-lens 8192 131072"
run() { name=$1; shift; timeout 170 python3 benchmarks/sparse.py $G "$@" > $OUT/r93-$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/r93-$name.log | sed -E 's/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; grep -E "^\| (quest|hash)" $OUT/r93-$name.log | awk -F'|' '{print "err", $2, $3, $5, $18}'; }
run kernel --batches 1 --gqa shared per_head
run launch --batches 1 --gqa shared per_head --set maskgraph.sparse.fused.MERGE_IN_KERNEL=0
run heads --batches 1 --gqa shared --set maskgraph.sparse.fused.MERGE_ALL_HEADS=True
run kernel8 --batches 8 --gqa shared
run launch8 --batches 8 --gqa shared --set maskgraph.sparse.fused.MERGE_IN_KERNEL=0
