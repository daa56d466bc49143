#!/usr/bin/env bash
# Issue 12's remaining step bin and host times, on two H200s side by side (about 4 minutes; one
# GPU runs them in turn). Run from the repository root with simpy importable (the device
# README's .whl carry). Everything lands in $OUT/sweep.tgz, with a log per part.
#   GPU 0: probe_steps (kernel tables of small mixed steps; the host calls of each step before
#          its device work runs; paged_decode's eager host time).
#   GPU 1: the Azure run (step bins against their floors; host preparation per step).
set -u
OUT=${OUT:?set OUT}
GPUS=$(nvidia-smi -L | wc -l)
W=$(mktemp -d)
mkdir -p "$W/probe" "$W/azure"
probe() {
  CUDA_VISIBLE_DEVICES=0 timeout 240 python3 benchmarks/probe_steps.py --out "$W/probe" \
      > "$W/probe.log" 2>&1
}
azure() {
  CUDA_VISIBLE_DEVICES=$1 timeout 300 python3 benchmarks/bench_gpu_decode.py --out "$W/azure" \
      --budget-slots 393216 --baseline-requests 0 > "$W/azure.log" 2>&1
}
if [ "$GPUS" -ge 2 ]; then
  probe & azure 1 & wait
else
  probe; azure 0
fi
tail -n 3 "$W"/*.log
tar -czf "$OUT/sweep.tgz" -C "$W" .
