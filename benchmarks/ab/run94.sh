#!/usr/bin/env bash
# Run 94 (session 16, H200): the attention mask transformers' injection passes in decode
# ((B, 1, 1, K) float32, additive) read as one row a block for every head
# (fused.SHARED_MASK_ROWS, new: Quest's page gather under a mask no longer spills) against one
# row per head; Quest, HashAttention and Double Sparsity, B=1 10 %, 8K and 128K, shared and per
# head, one process per side.
set -u
G="--graphs quest hashattention double_sparsity --densities 0.1 --kv-lens 8192 131072 --batches 1 --gqa shared per_head --mask"
run() { name=$1; shift; timeout 280 python3 benchmarks/sparse.py $G "$@" > $OUT/r94-$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/r94-$name.log | sed -E 's/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; grep -E "^\| (quest|hash|double)" $OUT/r94-$name.log | awk -F'|' '{print "err", $2, $3, $5, $18}'; }
run once
run per-head --set maskgraph.sparse.fused.SHARED_MASK_ROWS=False
