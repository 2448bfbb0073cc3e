#!/usr/bin/env bash
# Run 92 (session 15, H200): each listed page's index and value loaded once for its keys
# (fused.ENTRY_ROWS, new: no register spills left in Quest's page path) against once a key;
# the selection forms at 128K (B=1, 8) and Quest end to end, shared and per head, B=1, 8K and
# 128K, 10 %, one process per side.
set -u
python3 benchmarks/kernel_times.py --parts forms --batches 1 8 --densities 0.1 --gather-configs 64x528x4x2 > $OUT/r92-forms.log 2>&1
grep "^| forms" $OUT/r92-forms.log | grep "pages\|keys sorted" | sed -E 's/ +\| +/|/g' | cut -d'|' -f2-4,8
G="--graphs quest --densities 0.1 --kv-lens 8192 131072 --batches 1 --gqa shared per_head"
run() { name=$1; shift; timeout 100 python3 benchmarks/sparse.py $G "$@" > $OUT/r92-$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/r92-$name.log | sed -E 's/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; grep -E "^\| quest" $OUT/r92-$name.log | awk -F'|' '{print "err", $3, $5, $18}'; }
run entry
run key --set maskgraph.sparse.fused.ENTRY_ROWS=False
