#!/usr/bin/env bash
# Runs 97-98 (written in session 17, which had no GPU; run them when one is lent): a padded
# batch's attention mask applied by the estimators' score kernels (maskgraph.sparse.keymask,
# new: the Triton top-k keeps the kernel's histograms and drops the prior itself) against the
# mask applied in torch after them (IN_KERNEL=False, as before), and the same calls without a
# mask (run 94 found the mask costing 3-11 us); Quest, HashAttention and Double Sparsity, 10 %,
# 8K and 128K, shared and per head, one process per side.
#   bash benchmarks/ab/run97.sh 1    # run 97, B=1
#   bash benchmarks/ab/run97.sh 8    # run 98, B=8
set -u
B=${1:-1}
G="--graphs quest hashattention double_sparsity --densities 0.1 --kv-lens 8192 131072 --batches $B --gqa shared per_head"
run() { name=r97-b$B-$1; shift; timeout 190 python3 benchmarks/sparse.py $G "$@" > $OUT/$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/$name.log | sed -E 's/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; grep -E "^\| (quest|hash|double)" $OUT/$name.log | awk -F'|' '{print "err", $2, $3, $5, $18}'; }
run kernel --mask
run torch --mask --set maskgraph.sparse.keymask.IN_KERNEL=False
run none
