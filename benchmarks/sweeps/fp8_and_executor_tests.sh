#!/usr/bin/env bash
# After a change to the kernels' shared addressing (kernels/tl_helpers.py): the fp8 decode
# table again on GPU 0, and the executor's GPU tests of token equality (with transformers and
# with the reference kernels) and of fp8 KV on GPU 1 (about 5 minutes on one H200, the two in
# turn; at once on two). Run from the repository root with simpy importable (the device README's
# .whl carry); everything lands in $OUT/sweep.tgz.
. "$(dirname "$0")/common.sh"
fp8_table() {
  mkdir -p "$W/fp8"
  CUDA_VISIBLE_DEVICES=$1 timeout 170 python3 benchmarks/bench_paged_decode_fp8.py \
      --out "$W/fp8" > "$W/fp8.log" 2>&1
}
executor_tests() {
  CUDA_VISIBLE_DEVICES=$1 timeout 120 python3 -m pytest -q -p no:cacheprovider \
      tests/harness/gpu/test_gpu_engine.py tests/harness/gpu/test_gpu_fp8.py \
      -k "transformers or reference_tokens or fp8" > "$W/tests.log" 2>&1
}
side_by_side fp8_table executor_tests
pack 4
