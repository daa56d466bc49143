#!/usr/bin/env bash
# The same step shapes through every allocator (benchmarks/probe_steps.py --allocators, the
# Azure run's budget), with kernel tables: where a step of one batch differs across allocators.
# GPU 0 takes the allocators in the Azure run's order, GPU 1 in the reverse order, so that an
# effect of the order (clocks, heat) shows against one of the allocator (about 4 minutes on two
# H200s; one after the other on one). Run from the repository root with simpy importable (the
# device README's .whl carry); everything lands in $OUT/sweep.tgz.
. "$(dirname "$0")/common.sh"
probe() {
  local order=$2
  mkdir -p "$W/$order"
  CUDA_VISIBLE_DEVICES=$1 timeout 280 python3 benchmarks/probe_steps.py --out "$W/$order" \
      --steps-only --budget-slots 393216 --allocators "$3" > "$W/$order.log" 2>&1
}
forward() { probe "$1" forward static,paged,segmented,hybrid; }
reverse() { probe "$1" reverse hybrid,segmented,paged,static; }
side_by_side forward reverse
pack 30
