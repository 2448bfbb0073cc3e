#!/usr/bin/env bash
# Run 96 (session 16, H200): the shipped code's B=1 row of the matrix at 10 % (every
# graph, shared selections, 8K / 32K / 128K), one process, for the closing figures.
set -u
timeout 330 python3 benchmarks/sparse.py --batches 1 --gqa shared --densities 0.1 --kv-lens 8192 32768 131072 > $OUT/r96-b1.log 2>&1
grep "^graph=" $OUT/r96-b1.log | sed -E 's/density=[0-9.]*  //;s/graph=//;s/timing=[a-z-]*//;s/  +/ /g'
