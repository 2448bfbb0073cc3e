#!/usr/bin/env bash
# Run 98 (written in session 17, which had no GPU; run it when one is lent): a padded batch's
# attention mask applied by the estimators' score kernels (maskgraph.sparse.keymask, new: the
# Triton top-k keeps the kernel's histograms and drops the prior itself) against the mask
# applied in torch after them (IN_KERNEL=False, as before), and the same calls without a mask
# (run 94 found the mask costing 3-11 us); Quest, HashAttention and Double Sparsity, B=8 10 %,
# 8K and 128K, shared and per head, one process per side.
set -u
G="--graphs quest hashattention double_sparsity --densities 0.1 --kv-lens 8192 131072 --batches 8 --gqa shared per_head"
run() { name=$1; shift; timeout 190 python3 benchmarks/sparse.py $G "$@" > $OUT/r98-$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/r98-$name.log | sed -E 's/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; grep -E "^\| (quest|hash|double)" $OUT/r98-$name.log | awk -F'|' '{print "err", $2, $3, $5, $18}'; }
run kernel --mask
run torch --mask --set maskgraph.sparse.keymask.IN_KERNEL=False
run none
