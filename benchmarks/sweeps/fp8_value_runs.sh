#!/usr/bin/env bash
# The fp8 cache's V transposed in runs of tokens (kernels/segments.py value_run): the fp8
# decode table (paged_decode_fp8_<gpu>.csv), the fp8 launch's register cap and split counts
# tried on the shapes furthest from the target, then the kernel tests and the executor's fp8
# and pool tests on the GPU; one H200, about 7 minutes. Run from the repository root with simpy
# importable (the device README's .whl carry). Everything lands in $OUT/sweep.tgz, with a log
# per part.
. "$(dirname "$0")/common.sh"
mkdir -p "$W/fp8" "$W/tune"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
CUDA_VISIBLE_DEVICES=0 timeout 150 python3 benchmarks/bench_paged_decode_fp8.py --out "$W/fp8" > "$W/fp8.log" 2>&1
CUDA_VISIBLE_DEVICES=0 timeout 150 python3 benchmarks/bench_paged_decode_fp8.py --out "$W/tune" \
    --tune-configs default,128:4:2:168 --tune-splits 0,2,3,4,6,8 \
    --tune-shapes 32x4096,8x32768,64x4096,32x32768 --block-sizes 16,64 > "$W/tune.log" 2>&1
gpu_tests 0 250 kernels tests/kernels
gpu_tests 0 130 executor_fp8 tests/harness/gpu/test_gpu_fp8.py tests/harness/gpu/test_gpu_kv_pool.py \
    tests/harness/gpu/test_gpu_host_tier.py tests/harness/gpu/test_kv_accuracy.py \
    tests/harness/gpu/test_gpu_mixed_graphs.py
pack 8
