#!/usr/bin/env bash
# paged_decode's fp8 path through the Gluon kernel (kernels/fp8_decode.py) on one H200: its GPU
# tests, the fp8 table (paged_decode_fp8_<gpu>.csv, its bf16 rows beside), then the executor's
# fp8 GPU tests and the paged decode kernel tests. About 8 minutes. Run from the repository
# root with simpy importable (the device README's .whl carry). Everything lands in
# $OUT/sweep.tgz, with a log per part.
. "$(dirname "$0")/common.sh"
mkdir -p "$W/fp8"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
gpu_tests 0 150 fp8_decode tests/kernels/test_fp8_decode.py
CUDA_VISIBLE_DEVICES=0 timeout 170 python3 benchmarks/bench_paged_decode_fp8.py --out "$W/fp8" \
    > "$W/fp8.log" 2>&1
gpu_tests 0 150 executor_fp8 tests/harness/gpu/test_gpu_fp8.py tests/harness/gpu/test_kv_accuracy.py
gpu_tests 0 120 paged_decode tests/kernels/test_paged_decode.py
pack 6
