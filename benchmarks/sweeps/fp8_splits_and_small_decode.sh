#!/usr/bin/env bash
# Two tuning sweeps side by side on two H200s (a few minutes; one GPU runs them in turn). Run
# from the repository root; everything lands in $OUT/sweep.tgz, with a log per part.
#   GPU 0: fp8 decode launch shapes, with and without register caps, at split counts around
#          the default, on issue 16's target shapes (>= 64k tokens) at block sizes 16 and 64.
#   GPU 1: bf16 decode launch shapes and split counts on the few-row batches of issue 12's
#          small mixed steps (1,536-token contexts), with the SDPA floor beside them.
. "$(dirname "$0")/common.sh"
mkdir -p "$W/fp8" "$W/small"
fp8() {
  CUDA_VISIBLE_DEVICES=$1 timeout 420 python3 benchmarks/bench_paged_decode_fp8.py --out "$W/fp8" \
      --tune-configs default,128:4:2:168,128:4:3:168,64:4:3:168,128:4:2:128 \
      --tune-splits 0,1,2,3,4,6,8 --tune-shapes 32x4096,64x4096,8x32768,64x32768 \
      --block-sizes 16,64 > "$W/fp8.log" 2>&1
}
small() {
  CUDA_VISIBLE_DEVICES=$1 timeout 420 python3 benchmarks/bench_paged_decode.py --out "$W/small" \
      --tune --tune-shapes 4x1536,8x1536,16x1536,32x1536 --block-sizes 16 \
      --tune-configs 128:4:2,128:4:3,128:4:4,64:4:3,64:4:4,128:4:2:128,64:4:3:128 \
      --tune-splits 1,2,4,8 > "$W/small.log" 2>&1
}
side_by_side fp8 small
pack
