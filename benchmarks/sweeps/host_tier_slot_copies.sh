#!/usr/bin/env bash
# The host tier's copies (bench_host_tier.py: host_tier_<gpu>.csv) with KVPool's slot copies
# gathering K and V together again where they share a layout, then the executor's pool, swap,
# host-tier and fp8 tests on the GPU; one H200, about 3 minutes. Run from the repository root
# with simpy importable (the device README's .whl carry). Everything lands in $OUT/sweep.tgz,
# with a log per part.
. "$(dirname "$0")/common.sh"
mkdir -p "$W/tier"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
CUDA_VISIBLE_DEVICES=0 timeout 90 python3 benchmarks/bench_host_tier.py --out "$W/tier" \
    > "$W/tier.log" 2>&1
gpu_tests 0 150 pool tests/harness/gpu/test_gpu_kv_pool.py tests/harness/gpu/test_gpu_host_tier.py \
    tests/harness/gpu/test_gpu_fp8.py tests/harness/gpu/test_gpu_engine.py
pack 45
