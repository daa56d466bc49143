#!/usr/bin/env bash
# Issue 12's remaining step bin and host times, on two H200s side by side (about 4 minutes; one
# GPU runs them in turn). Run from the repository root with simpy importable (the device
# README's .whl carry). Everything lands in $OUT/sweep.tgz, with a log per part.
#   GPU 0: probe_steps (kernel tables of small mixed steps; the host calls of each step before
#          its device work runs; paged_decode's eager host time).
#   GPU 1: the Azure run (step bins against their floors; host preparation per step).
. "$(dirname "$0")/common.sh"
mkdir -p "$W/probe"
probe() {
  CUDA_VISIBLE_DEVICES=$1 timeout 240 python3 benchmarks/probe_steps.py --out "$W/probe" \
      > "$W/probe.log" 2>&1
}
second() {
  azure "$1" 300
}
side_by_side probe second
pack
