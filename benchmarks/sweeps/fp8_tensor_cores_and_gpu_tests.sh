#!/usr/bin/env bash
# fp8 decode with both dots on the fp8 tensor cores (benchmarks/probe_fp8_tensor_cores.py), then
# the kernel tests and the executor's fp8, pool and host-tier tests on the GPU; one H200, at
# most about 9 minutes. Run from the repository root with simpy importable (the device README's
# .whl carry). Everything lands in $OUT/sweep.tgz, with a log per part.
. "$(dirname "$0")/common.sh"
mkdir -p "$W/probe"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
CUDA_VISIBLE_DEVICES=0 timeout 100 python3 benchmarks/probe_fp8_tensor_cores.py --out "$W/probe" \
    > "$W/probe.log" 2>&1
gpu_tests 0 220 kernels tests/kernels
gpu_tests 0 200 executor_fp8 --durations=8 tests/harness/gpu/test_gpu_fp8.py \
    tests/harness/gpu/test_gpu_kv_pool.py tests/harness/gpu/test_gpu_host_tier.py
pack 8
