#!/usr/bin/env bash
# Every GPU test of the suite, and where the executor's host preparation goes on a GPU host, on
# two H200s (about 8 minutes; one after the other on one). GPU 0: tests/harness/gpu. GPU 1:
# tests/kernels and tests/benchmarks, then benchmarks/probe_host_prep.py's wave under cProfile
# through paged and segmented. Run from the repository root with simpy importable (the device
# README's .whl carry); everything lands in $OUT/sweep.tgz, with a log per part.
. "$(dirname "$0")/common.sh"
executor_tests() {
  CUDA_VISIBLE_DEVICES=$1 timeout 450 python3 -m pytest -q -p no:cacheprovider --durations=15 \
      tests/harness/gpu > "$W/tests_executor.log" 2>&1
}
kernel_tests_and_profile() {
  CUDA_VISIBLE_DEVICES=$1 timeout 300 python3 -m pytest -q -p no:cacheprovider --durations=15 \
      tests/kernels tests/benchmarks > "$W/tests_kernels.log" 2>&1
  for allocator in paged segmented; do
    CUDA_VISIBLE_DEVICES=$1 timeout 90 python3 benchmarks/probe_host_prep.py --device cuda \
        --out "$W/prof_$allocator" --profile "$allocator" > "$W/prof_$allocator.log" 2>&1
  done
}
side_by_side executor_tests kernel_tests_and_profile
pack
