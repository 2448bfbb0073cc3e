#!/usr/bin/env bash
# Run 89 (session 15, H200): page selections with runs of other lengths (one run of 4 keys; two
# of 4 + 12, 60, 64, 76; one of 64 or 68), to see whether the runs' cost in run 87 came from
# the listed entries' alignment. It ran with a --run-lengths option of the forms part, dropped
# after the run (the alignment was not the cause: docs/benchmarks.md, runs 86–91).
set -u
python3 benchmarks/kernel_times.py --parts forms --batches 1 --densities 0.1 \
  --run-lengths 4+0 4+12 4+60 4+64 4+76 64+0 68+0 > $OUT/r89-forms.log 2>&1
grep "^| forms" $OUT/r89-forms.log
