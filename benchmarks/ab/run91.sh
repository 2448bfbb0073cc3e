#!/usr/bin/env bash
# Run 91 (session 15, H200): gather_decode in blocks of 32 keys where blocks of 64 leave fewer
# than fused.SMALL_GRID programs (new; B=1 8K shared: 8 rows of 819 keys), against 64 always
# (SMALL_GRID=0); four graphs, shared, B=1, 8K, 10 %; the GPU checks. The small block lost
# (docs/benchmarks.md, run 91) and was taken back before commit: SMALL_GRID no longer exists.
set -u
python3 benchmarks/gpu_check.py > $OUT/r91-check.log 2>&1; grep -i "mismatch" $OUT/r91-check.log; tail -1 $OUT/r91-check.log
G="--graphs quest hashattention double_sparsity streaming_llm --densities 0.1 --kv-lens 8192 --batches 1 --gqa shared"
run() { name=$1; shift; timeout 150 python3 benchmarks/sparse.py $G "$@" > $OUT/r91-$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/r91-$name.log | sed -E 's/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; }
run small
run off --set maskgraph.sparse.fused.SMALL_GRID=0
run small2
