#!/usr/bin/env bash
# Two probes side by side on two H200s (about 4 minutes; one GPU runs them in turn). Run from
# the repository root; everything lands in $OUT/sweep.tgz, with a log per part.
#   GPU 0: the fp8 decode kernel's launch shapes with register caps (maxnreg), against bf16:
#          whether more programs per SM lift it towards issue 16's 1.7x.
#   GPU 1: probe_mixed_attention with the decode launch at other split counts: what a small
#          mixed step's decode rows cost against issue 12's floor.
. "$(dirname "$0")/common.sh"
mkdir -p "$W/fp8" "$W/mixed"
fp8() {
  CUDA_VISIBLE_DEVICES=$1 timeout 300 python3 benchmarks/bench_paged_decode_fp8.py --out "$W/fp8" \
      --tune-configs default,128:4:2,128:4:2:168,128:4:2:128,128:4:3:168,128:4:1:128,64:4:3:128,64:4:2:96,256:4:2:168,128:8:2:128,128:8:2:96 \
      --tune-shapes 64x32768,32x4096 --block-sizes 16 > "$W/fp8.log" 2>&1
}
mixed() {
  CUDA_VISIBLE_DEVICES=$1 timeout 300 python3 benchmarks/probe_mixed_attention.py --out "$W/mixed" \
      > "$W/mixed.log" 2>&1
}
side_by_side fp8 mixed
pack
