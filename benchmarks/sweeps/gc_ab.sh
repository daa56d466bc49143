#!/usr/bin/env bash
# The garbage collector left on (25e24ec's harness/gpu/run.py) and off during a GPU run: issue
# 12's Azure run through paged and segmented under benchmarks/probe_gc_pauses.py, old and new
# run.py one after the other on one H200 (about 3 minutes). Run from the repository root with
# simpy importable (the device README's .whl carry); everything lands in $OUT/sweep.tgz. The
# device's copy of the repository has no .git: first put the old file where `versions` looks
# then, `mkdir -p benchmarks/sweeps/old && git show 25e24ec:harness/gpu/run.py >
# benchmarks/sweeps/old/run.py` (an untracked file travels).
. "$(dirname "$0")/common.sh"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
versions 25e24ec harness/gpu/run.py
for v in old new; do
  use "$v"
  mkdir -p "$W/$v"
  CUDA_VISIBLE_DEVICES=0 timeout 110 python3 benchmarks/probe_gc_pauses.py --out "$W/$v" \
      --allocators paged,segmented --budget-slots 393216 --baseline-requests 0 > "$W/$v.log" 2>&1
done
use new
pack 6
