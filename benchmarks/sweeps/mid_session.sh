#!/usr/bin/env bash
# Issue 16's fp8 table and issue 12's small mixed steps, on two H200s side by side (a few
# minutes; one GPU runs them in turn). Run from the repository root with simpy importable (the
# device README's .whl carry). Everything lands in $OUT/sweep.tgz, with a log per part.
#   GPU 0: probe_mixed_attention (prefill launch shapes beside the decode launch), then the fp8
#          decode table (bench_paged_decode_fp8.py, the committed paged_decode_fp8_<gpu>.csv).
#   GPU 1: the Azure run (step bins against their floors).
. "$(dirname "$0")/common.sh"
mkdir -p "$W/mixed" "$W/fp8"
first() {
  CUDA_VISIBLE_DEVICES=$1 timeout 120 python3 benchmarks/probe_mixed_attention.py \
      --out "$W/mixed" > "$W/mixed.log" 2>&1
  CUDA_VISIBLE_DEVICES=$1 timeout 300 python3 benchmarks/bench_paged_decode_fp8.py \
      --out "$W/fp8" > "$W/fp8.log" 2>&1
}
second() {
  azure "$1" 300
}
side_by_side first second
pack
