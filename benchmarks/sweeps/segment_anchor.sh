#!/usr/bin/env bash
# The decode kernel's anchored segment lookup (kernels/tl_helpers.py tile_rows) measured: on
# GPU 0 issue 12's Azure run (same-batch spread across allocators, host parts); on GPU 1
# benchmarks/probe_block_sizes.py, the step shapes through every allocator with kernel tables
# (probe_steps.py --allocators) and the kernel tests on the GPU (about 5 minutes on two H200s;
# one after the other on one). Run from the repository root with simpy importable (the device
# README's .whl carry); everything lands in $OUT/sweep.tgz.
. "$(dirname "$0")/common.sh"
run_azure() { azure "$1" 260; }
probes() {
  mkdir -p "$W/block_sizes" "$W/steps"
  export CUDA_VISIBLE_DEVICES=$1
  timeout 90 python3 benchmarks/probe_block_sizes.py --out "$W/block_sizes" \
      > "$W/block_sizes.log" 2>&1
  timeout 150 python3 benchmarks/probe_steps.py --out "$W/steps" --steps-only \
      --budget-slots 393216 --allocators static,paged,segmented,hybrid > "$W/steps.log" 2>&1
  timeout 200 python3 -m pytest -q -p no:cacheprovider tests/kernels > "$W/kernel_tests.log" 2>&1
}
side_by_side run_azure probes
pack 3
