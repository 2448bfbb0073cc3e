#!/usr/bin/env bash
# Run 90 (session 15, H200): gather_decode with 32-bit key offsets (64-bit ones spilled
# registers: 24–600 bytes of stack at 4 warps, sm_90). The selection forms for five launch
# settings (new code), the shipped setting with the old kernel (benchmarks/ab/old88: the files
# before the change, copied over for that side), and Quest / HashAttention end to end, new
# against old, one process per side; the GPU checks.
set -u
# the old side's files (not committed: they are commit 2b92913's)
if [ ! -f benchmarks/ab/old88/fused.py ]; then
  mkdir -p benchmarks/ab/old88
  for f in fused fused_kernel; do git show 2b92913:maskgraph/sparse/$f.py > benchmarks/ab/old88/$f.py; done
fi
python3 benchmarks/gpu_check.py > $OUT/r90-check.log 2>&1; grep -i "mismatch" $OUT/r90-check.log; tail -1 $OUT/r90-check.log
C="--gather-configs 64x528x4x2 64x528x8x2 32x1056x4x2 32x528x4x2 64x528x4x3"
python3 benchmarks/kernel_times.py --parts forms --batches 1 8 --densities 0.1 $C > $OUT/r90-forms-128k.log 2>&1
python3 benchmarks/kernel_times.py --parts forms --batches 1 --densities 0.1 --kv-len 8192 $C > $OUT/r90-forms-8k.log 2>&1
G="--graphs quest hashattention --densities 0.1 --kv-lens 8192 131072 --batches 1 --gqa shared per_head"
run() { name=$1; shift; timeout 200 python3 benchmarks/sparse.py $G "$@" > $OUT/r90-$name.log 2>&1; echo "== $name"; grep "^graph=" $OUT/r90-$name.log | sed -E 's/density=[0-9.]*  n=[0-9]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'; }
run new
mkdir -p /tmp/new && cp maskgraph/sparse/fused.py maskgraph/sparse/fused_kernel.py /tmp/new/
cp benchmarks/ab/old88/fused.py benchmarks/ab/old88/fused_kernel.py maskgraph/sparse/
python3 benchmarks/kernel_times.py --parts forms --batches 1 --densities 0.1 > $OUT/r90-forms-old.log 2>&1
run old
cp /tmp/new/fused.py /tmp/new/fused_kernel.py maskgraph/sparse/
grep -h "^| forms" $OUT/r90-forms-128k.log $OUT/r90-forms-8k.log $OUT/r90-forms-old.log | sed -E 's/ +\| +/|/g' | cut -d'|' -f2-9
