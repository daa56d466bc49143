#!/usr/bin/env bash
# Where the executor's host preparation goes in issue 12's Azure run: the run through paged
# (GPU 0) and segmented (GPU 1) under cProfile, each followed by the callees of the executor's
# step and of its host parts, and the harness's functions by own time (about 4 minutes on two
# H200s). Run from the repository root with simpy importable (the device README's .whl carry);
# everything lands in $OUT/sweep.tgz, with a log per part.
. "$(dirname "$0")/common.sh"
profiled() {
  local name=$2
  mkdir -p "$W/$name"
  CUDA_VISIBLE_DEVICES=$1 timeout 240 python3 -m cProfile -o "$W/$name.prof" \
      benchmarks/bench_gpu_decode.py --out "$W/$name" --allocators "$name" \
      --budget-slots 393216 --baseline-requests 0 > "$W/$name.log" 2>&1
  python3 - "$W/$name.prof" > "$W/${name}_stats.log" 2>&1 <<'PY'
import pstats, sys
stats = pstats.Stats(sys.argv[1])
for name in (r"executor.py:\d+\(step\)", r"executor.py:\d+\(_stage\)", r"\(plan_step\)",
             r"\(_lifecycle\)", r"\(keep_sampled\)", r"graphs.py:\d+\(stage\)",
             r"mixed_graphs.py:\d+\(stage\)", r"\(layout_step\)", r"\(plan_for\)"):
    stats.sort_stats("cumulative").print_callees(name)
stats.sort_stats("tottime").print_stats(r"harness|kernels|numpy", 50)
PY
}
paged() { profiled "$1" paged; }
segmented() { profiled "$1" segmented; }
side_by_side paged segmented
pack 5
