#!/usr/bin/env bash
# paged_decode's combine of its splits, before and after: bench_decode_balance with the kernels
# of commit 3db1a3b (combine_splits loading one split at a time) and with the working tree's, on
# one machine, one after the other; then the kernel and executor GPU tests. Run from the
# repository root with simpy importable (the device README's .whl carry); the files of 3db1a3b
# come from git, or from benchmarks/sweeps/old/ where the copy has no .git. Everything lands in
# $OUT/sweep.tgz (old/ and new/ tables, a log per part).
. "$(dirname "$0")/common.sh"
versions 3db1a3b kernels/split_kv.py kernels/paged_decode.py
mkdir -p "$W/old" "$W/new"
use old
timeout 60 python3 benchmarks/bench_decode_balance.py --out "$W/old" > "$W/old.log" 2>&1
use new
timeout 60 python3 benchmarks/bench_decode_balance.py --out "$W/new" > "$W/new.log" 2>&1
gpu_tests 0 180 kernels -x tests/kernels
gpu_tests 0 220 gpu tests/harness/gpu
pack 6
