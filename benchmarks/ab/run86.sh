#!/usr/bin/env bash
# Run 86 (session 15, H200): where a per-head call goes. Kernel profiles (PDL off, so each
# kernel's own time) of gqa="per_head" against "shared", B=1, 10 %, 8K and 128K, for the three
# estimators with per-head kernels, and PQCache shared for its grouped-kernel question.
set -u
P="--set maskgraph.triton_util.PDL=False --profile 16 --densities 0.1 --kv-lens 8192 131072 --batches 1"
run() { name=$1; shift; timeout 280 python3 benchmarks/sparse.py $P "$@" > $OUT/r86-$name.log 2>&1; echo "== $name rc=$?"; grep "^graph=" $OUT/r86-$name.log | sed -E 's/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; }
run perhead --graphs hashattention double_sparsity quest --gqa per_head
run shared --graphs hashattention double_sparsity quest pqcache --gqa shared
