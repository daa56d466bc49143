#!/usr/bin/env bash
# Issue 12's Azure run with the step log's host parts (plan_s, stage_s) on GPU 0, beside
# benchmarks/probe_steps.py (eager paged_decode's host time by part, small mixed steps) on GPU 1
# (about 4 minutes on two H200s; one after the other on one). Run from the repository root with
# simpy importable (the device README's .whl carry); everything lands in $OUT/sweep.tgz.
. "$(dirname "$0")/common.sh"
run_azure() { azure "$1" 260; }
probe() {
  mkdir -p "$W/probe"
  CUDA_VISIBLE_DEVICES=$1 timeout 150 python3 benchmarks/probe_steps.py --out "$W/probe" \
      > "$W/probe.log" 2>&1
}
side_by_side run_azure probe
pack 12
