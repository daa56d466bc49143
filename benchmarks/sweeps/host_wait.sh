#!/usr/bin/env bash
# Whether the way the host waits for a step changes the host work after it: the wait probe
# (probe_host_wait.py: host_wait_<gpu>.csv), issue 12's Azure run through the four allocators
# (gpu_steps_<gpu>.csv, gpu_decode_<gpu>.csv), then the executor tests on the GPU but
# test_gpu_engine.py (run on its own); one H200, at most about 9.5 minutes. Its committed run
# (benchmarks/results/tuning/host_wait_h200.csv, gpu_steps_timer_polling_h200.csv,
# gpu_decode_timer_polling_h200.csv) had harness/gpu/timing.py's DeviceTimer polling its end
# event, the change the probe tested and main did not keep. Run from the repository root with
# simpy importable (the device README's .whl carry). Everything lands in $OUT/sweep.tgz, with a
# log per part.
. "$(dirname "$0")/common.sh"
mkdir -p "$W/wait"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
CUDA_VISIBLE_DEVICES=0 timeout 120 python3 benchmarks/probe_host_wait.py --out "$W/wait" \
    > "$W/wait.log" 2>&1
azure 0 200
gpu_tests 0 230 executor --durations=10 tests/harness/gpu \
    --ignore=tests/harness/gpu/test_gpu_engine.py
pack 12
