#!/usr/bin/env bash
# The tables that time paged_decode's split-KV launch, again after a change to it (kernels/
# split_kv.py combine_splits): bench_prefill (prefill_<gpu>.csv and the PagedAttention v1/v2
# comparison decode_splits_<gpu>.csv) and bench_paged_decode_fp8 (paged_decode_fp8_<gpu>.csv),
# one after the other on GPU 0. Run from the repository root; no simpy needed. Everything lands
# in $OUT/sweep.tgz, with a log per part.
. "$(dirname "$0")/common.sh"
mkdir -p "$W/prefill" "$W/fp8"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
CUDA_VISIBLE_DEVICES=0 timeout 240 python3 benchmarks/bench_prefill.py --out "$W/prefill" > "$W/prefill.log" 2>&1
CUDA_VISIBLE_DEVICES=0 timeout 150 python3 benchmarks/bench_paged_decode_fp8.py --out "$W/fp8" > "$W/fp8.log" 2>&1
pack 8
