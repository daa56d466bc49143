#!/usr/bin/env bash
# Issue 12's closing measurements on two H200s side by side, in at most about 3.5 minutes (a
# session's last device minutes). Run from the repository root with simpy importable (the device
# README's .whl carry). Everything lands in $OUT/sweep.tgz, with a log per part.
#   GPU 0: the Azure run (step bins against their floors; host preparation per step).
#   GPU 1: probe_steps (small mixed steps; paged_decode's eager host time by part), then the
#          GPU tests of the graph paths and of token equality with transformers.
. "$(dirname "$0")/common.sh"
mkdir -p "$W/probe"
azure 0 195 &
(export CUDA_VISIBLE_DEVICES=1
 timeout 80 python3 benchmarks/probe_steps.py --out "$W/probe" > "$W/probe.log" 2>&1
 timeout 110 python3 -m pytest -q -p no:cacheprovider tests/harness/gpu/test_gpu_graph_paths.py \
     tests/harness/gpu/test_gpu_engine.py > "$W/tests.log" 2>&1) &
wait
pack
