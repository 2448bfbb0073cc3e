#!/usr/bin/env bash
# Run 95 (session 16, H200): per generated token (8 layers of Llama-3-8B's shape, the step as one
# CUDA graph, 32K, 10 %; `run95.sh 131072`: 128K, logs r95-128k-*), graph layers running an unpadded decode step without transformers'
# mask (maskgraph.hf.inject.UNMASKED_DECODE, new) against with it; one process per side.
set -u
CTX=${1:-32768}; TAG=$([ "$CTX" = 32768 ] && echo "" || echo "128k-")
G="--contexts $CTX --densities 0.1 --graphs quest hashattention --steps 20"
for side in unmasked masked; do
  set_arg=""; [ $side = masked ] && set_arg="--set maskgraph.hf.inject.UNMASKED_DECODE=False"
  timeout 230 python3 benchmarks/decode_graph.py $G $set_arg > $OUT/r95-$TAG$side.log 2>&1
  echo "== $side"; grep -E "^\| (sdpa|flash|dense|quest|hash)" $OUT/r95-$TAG$side.log
done
