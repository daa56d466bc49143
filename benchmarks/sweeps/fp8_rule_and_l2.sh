#!/usr/bin/env bash
# kernels/fp8_decode.py's split rule (decode_launch.choose_fp8_num_splits) and bench_paged_decode.
# time_us's L2 eviction on one H200: the fp8 kernel's GPU tests, the probe of L2 evictions
# (benchmarks/probe_l2_eviction.py), the fp8 table (paged_decode_fp8_<gpu>.csv, its bf16 rows
# beside), the paged decode kernel tests and the executor's fp8 GPU tests. About 7 minutes. Run
# from the repository root with simpy importable (the device README's .whl carry). Everything
# lands in $OUT/sweep.tgz (packed after each part), with a log per part.
. "$(dirname "$0")/common.sh"
mkdir -p "$W/l2" "$W/fp8"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
gpu_tests 0 100 fp8_decode tests/kernels/test_fp8_decode.py
pack 3
CUDA_VISIBLE_DEVICES=0 timeout 100 python3 benchmarks/probe_l2_eviction.py --out "$W/l2" \
    > "$W/l2.log" 2>&1
pack 3
CUDA_VISIBLE_DEVICES=0 timeout 150 python3 benchmarks/bench_paged_decode_fp8.py --out "$W/fp8" \
    > "$W/fp8.log" 2>&1
pack 3
gpu_tests 0 100 paged_decode tests/kernels/test_paged_decode.py
pack 3
gpu_tests 0 200 executor_fp8 tests/harness/gpu/test_gpu_fp8.py tests/harness/gpu/test_kv_accuracy.py
pack 4
