#!/usr/bin/env bash
# Issue 12's Azure run through the four allocators (gpu_steps_<gpu>.csv, gpu_decode_<gpu>.csv),
# the host tier's copies (bench_host_tier.py: host_tier_<gpu>.csv), then the executor's accuracy
# and mixed-graph tests on the GPU; one H200, at most about 9 minutes. Run from the repository
# root with simpy importable (the device README's .whl carry). Everything lands in
# $OUT/sweep.tgz, with a log per part.
. "$(dirname "$0")/common.sh"
mkdir -p "$W/tier"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
azure 0 290
CUDA_VISIBLE_DEVICES=0 timeout 90 python3 benchmarks/bench_host_tier.py --out "$W/tier" \
    > "$W/tier.log" 2>&1
gpu_tests 0 150 executor_rest --durations=8 tests/harness/gpu/test_kv_accuracy.py \
    tests/harness/gpu/test_gpu_mixed_graphs.py
pack 8
