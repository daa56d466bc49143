#!/usr/bin/env bash
# Issue 12's Azure run alone on its machine (benchmarks/results/gpu_steps_<gpu>.csv and
# gpu_decode_<gpu>.csv, now with host preparation's CPU time), then the GPU tests of the KV pool
# (the pool, fp8, the host tier), of the host clock and of the executor end to end
# (test_gpu_engine.py). One H200, at most 8 minutes. Run from the repository root with simpy
# importable (the device README's .whl carry). Everything lands in $OUT/sweep.tgz, with a log
# per part.
. "$(dirname "$0")/common.sh"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
azure 0 210
gpu_tests 0 270 tests --durations=8 tests/harness/gpu/test_gpu_kv_pool.py \
    tests/harness/gpu/test_gpu_fp8.py tests/harness/gpu/test_gpu_host_tier.py \
    tests/harness/gpu/test_timing.py tests/harness/gpu/test_gpu_engine.py
pack 6
