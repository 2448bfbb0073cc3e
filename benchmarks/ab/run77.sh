#!/usr/bin/env bash
# Run 77: settings A/B (one host, one process per setting), B=1 10 %.
set -u
S="python3 benchmarks/sparse.py --batches 1 --densities 0.1 --gqa shared"
run() { name=$1; shift; $S "$@" > $OUT/r77-$name.log 2>&1; echo "== $name"; grep -E "^\| (quest|double|hash|pq|stream|dense)" $OUT/r77-$name.log | awk -F'|' '{printf "%s %s %s %s\n",$2,$5,$8,$9}'; }
run base --graphs quest double_sparsity --kv-lens 8192 131072
run dsb512 --graphs double_sparsity --kv-lens 8192 131072 --set maskgraph.ops.zoo.double_sparsity.DS_BLOCK=512
run dsb256 --graphs double_sparsity --kv-lens 8192 131072 --set maskgraph.ops.zoo.double_sparsity.DS_BLOCK=256
run dsw8 --graphs double_sparsity --kv-lens 8192 131072 --set maskgraph.ops.zoo.double_sparsity.DS_WARPS=8
run qb32 --graphs quest --kv-lens 131072 --set maskgraph.ops.zoo.quest.QUEST_DOT_BLOCK=32
run qb128 --graphs quest --kv-lens 131072 --set maskgraph.ops.zoo.quest.QUEST_DOT_BLOCK=128
run sw8 --graphs quest --kv-lens 8192 --set maskgraph.sparse.topk.SMALL_WARPS=8
run sw16 --graphs quest --kv-lens 8192 --set maskgraph.sparse.topk.SMALL_WARPS=16
run base2 --graphs quest double_sparsity --kv-lens 8192 131072
