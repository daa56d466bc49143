#!/usr/bin/env bash
# kernels/fp8_decode.py's split rule (decode_launch.choose_fp8_num_splits) and bench_paged_decode.
# time_us's L2 eviction on one H200 (common.sh's fp8_kernel): the fp8 kernel's GPU tests, the
# probe of L2 evictions (benchmarks/probe_l2_eviction.py), the fp8 table (paged_decode_fp8_<gpu>
# .csv, its bf16 rows beside), the paged decode kernel tests and the executor's fp8 GPU tests.
# About 7 minutes. Run from the repository root with simpy importable (the device README's .whl
# carry). Everything lands in $OUT/sweep.tgz (packed after each part), with a log per part.
. "$(dirname "$0")/common.sh"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
fp8_kernel l2 100 benchmarks/probe_l2_eviction.py
