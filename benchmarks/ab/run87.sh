#!/usr/bin/env bash
# Run 87 (session 15, H200): the same number of keys read by gather_decode in each selection
# form (benchmarks/kernel_times.py --parts forms, new): key lists, pages, the top-k's values, the
# sink and window runs; shared and per head; B=1 and 8 at 128K, B=1 at 8K, 10 %.
set -u
python3 benchmarks/kernel_times.py --parts forms --batches 1 8 --densities 0.1 > $OUT/r87-forms-128k.log 2>&1
python3 benchmarks/kernel_times.py --parts forms --batches 1 --densities 0.1 --kv-len 8192 > $OUT/r87-forms-8k.log 2>&1
grep -h "^|" $OUT/r87-forms-128k.log $OUT/r87-forms-8k.log
