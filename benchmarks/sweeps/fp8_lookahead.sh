#!/usr/bin/env bash
# Run at commit 1f56868, whose decode loop looked its tables up two tiles ahead of its loads
# (kernels/tl_helpers.py attend_keys; reverted in the next commit), against commit d64e2a9's
# loop, on one H200: the fp8 table (its bf16 rows beside) with each version's kernels, then
# the fp8 launch shapes that the look-ahead lets the pipeliner double-buffer, timed beside the
# bf16 default on the shapes furthest from 1.7x; then the graph-path GPU tests. About 4
# minutes. Run from the repository root with simpy importable (the device README's .whl
# carry); d64e2a9's file comes from git, or from benchmarks/sweeps/old/ where the copy has no
# .git. Everything lands in $OUT/sweep.tgz (old/ and new/ tables, a log per part).
. "$(dirname "$0")/common.sh"
versions d64e2a9 kernels/tl_helpers.py
mkdir -p "$W/old" "$W/new" "$W/tune_old" "$W/tune_new"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
SHAPES="--tune-shapes 32x4096,64x4096,8x32768,32x32768 --block-sizes 16,64"
for version in new old; do
  use $version
  CUDA_VISIBLE_DEVICES=0 timeout 170 python3 benchmarks/bench_paged_decode_fp8.py \
      --out "$W/$version" > "$W/$version.log" 2>&1
done
CUDA_VISIBLE_DEVICES=0 timeout 90 python3 benchmarks/bench_paged_decode_fp8.py \
    --out "$W/tune_old" --tune-configs default $SHAPES > "$W/tune_old.log" 2>&1
use new
CUDA_VISIBLE_DEVICES=0 timeout 200 python3 benchmarks/bench_paged_decode_fp8.py \
    --out "$W/tune_new" --tune-configs default,128:4:3:128,128:4:3:168,64:4:3:128,64:4:4:128,64:4:3:168 \
    $SHAPES > "$W/tune_new.log" 2>&1
gpu_tests 0 150 graph_paths tests/harness/gpu/test_gpu_graph_paths.py
pack 4
