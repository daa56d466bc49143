#!/usr/bin/env bash
# Host time before and after this change to the launch path and the block-table update: the
# files of commit 616ea2f (kernels/launch.py, paged_decode.py, split_kv.py, harness/gpu/
# host_state.py) against the working tree's, on one machine. paged_decode's eager host time at
# 1x4096 (benchmarks/gpu_steps.py paged_decode_host_us, the Azure table's figure), old and new
# alternately, three processes each; probe_host_prep.py's executor host preparation, old then
# new; then the kernel GPU tests. Run from the repository root with simpy importable (the
# device README's .whl carry); the files of 616ea2f come from git, or from benchmarks/sweeps/old/
# where the copy has no .git. Everything lands in $OUT/sweep.tgz.
. "$(dirname "$0")/common.sh"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
versions 616ea2f kernels/launch.py kernels/paged_decode.py kernels/split_kv.py \
    harness/gpu/host_state.py
mkdir -p "$W/prep_old" "$W/prep_new"
host_us() {
  use "$1"
  CUDA_VISIBLE_DEVICES=0 timeout 120 python3 -c \
      "from gpu_steps import paged_decode_host_us; print('$1', round(paged_decode_host_us(2000), 1))" \
      >> "$W/host_us.log" 2>&1
}
for _ in 1 2 3; do host_us old; host_us new; done
for version in old new; do
  use "$version"
  CUDA_VISIBLE_DEVICES=0 timeout 150 python3 benchmarks/probe_host_prep.py \
      --out "$W/prep_$version" > "$W/prep_$version.log" 2>&1
done
gpu_tests 0 200 kernels tests/kernels
pack 16
