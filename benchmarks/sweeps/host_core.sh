#!/usr/bin/env bash
# Where a slow step's host preparation goes, and whether a core of its own for the engine's
# thread keeps every step under 1 ms: probe_host_core.py's Azure run (issue 12's, through the
# four allocators) as it is, then with the engine thread alone on core 2 (committed:
# benchmarks/results/tuning/host_core_steps_h200.csv, host_core_steps_pinned_h200.csv). One
# H200, at most 7 minutes.
# Run from the repository root with simpy importable (the device README's .whl carry).
# Everything lands in $OUT/sweep.tgz, with a log per part.
. "$(dirname "$0")/common.sh"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
for part in free pinned; do
  mkdir -p "$W/$part"
  core=()
  [ "$part" = pinned ] && core=(--engine-core 2)
  CUDA_VISIBLE_DEVICES=0 timeout 210 python3 benchmarks/probe_host_core.py "${core[@]}" \
      --out "$W/$part" --budget-slots 393216 --baseline-requests 0 > "$W/$part.log" 2>&1
done
pack 6
