#!/usr/bin/env bash
# The executor with each graph step's device part in its graph, on two H200s side by side
# (about 6 minutes; one GPU runs them in turn). Run from the repository root with simpy
# importable (the device README's .whl carry). Everything lands in $OUT/sweep.tgz, with a log
# per part.
#   GPU 0: the GPU tests of the kernels and the graph paths, then probe_steps.
#   GPU 1: the Azure run (step bins against their floors), then the fp8 decode table (not with
#          SKIP_FP8=1).
. "$(dirname "$0")/common.sh"
mkdir -p "$W/probe" "$W/fp8"
first() {
  CUDA_VISIBLE_DEVICES=$1 timeout 200 python3 -m pytest -q -x -p no:cacheprovider \
      tests/kernels tests/harness/gpu/test_gpu_mixed_graphs.py \
      tests/harness/gpu/test_gpu_graph_paths.py tests/harness/gpu/test_gpu_batching.py \
      > "$W/tests.log" 2>&1
  CUDA_VISIBLE_DEVICES=$1 timeout 200 python3 benchmarks/probe_steps.py --out "$W/probe" \
      > "$W/probe.log" 2>&1
}
second() {
  azure "$1" 200
  [ "${SKIP_FP8:-0}" = 1 ] || CUDA_VISIBLE_DEVICES=$1 timeout 180 python3 \
      benchmarks/bench_paged_decode_fp8.py --out "$W/fp8" > "$W/fp8.log" 2>&1
}
side_by_side first second
pack
