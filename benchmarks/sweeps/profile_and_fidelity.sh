#!/usr/bin/env bash
# The fitted cost model's profiles measured again on today's executor, then its validation
# against them, on two H200s of one machine (about 9 minutes). GPU 0: the llama3-8b profile,
# then bench_fidelity.py's azure-10x and azure-4x slices fitted to it. GPU 1: the llama3.1-8b
# profile, the GPU tests of the graph paths (graphs captured anew), then the mooncake-2x slice.
# The profiles take the grid and time limit of the committed ones. Run from the repository root
# with simpy importable (the device README's .whl carry); everything lands in $OUT/sweep.tgz,
# with a log per part.
. "$(dirname "$0")/common.sh"
mkdir -p "$W/prof" "$W/fid_a" "$W/fid_b" "$W/fid_c"
profile() {  # GPU MODEL
  CUDA_VISIBLE_DEVICES=$1 timeout 195 python3 -m harness.cli profile --model "$2" \
      --block-sizes 16,64,256 --out "$W/prof" --time-limit-s 165 > "$W/prof_$2.log" 2>&1
}
fidelity() {  # GPU PART SLICE
  CUDA_VISIBLE_DEVICES=$1 timeout 175 python3 benchmarks/bench_fidelity.py \
      --profile-dir "$W/prof" --out "$W/fid_$2" --slices "$3" --time-limit-s 160 \
      > "$W/fid_$2.log" 2>&1
}
(profile 0 llama3-8b
 touch "$W/prof/done"
 fidelity 0 a azure-10x
 fidelity 0 c azure-4x) &
(profile 1 llama3.1-8b
 gpu_tests 1 90 graphs tests/harness/gpu/test_gpu_graph_paths.py
 for _ in $(seq 60); do [ -e "$W/prof/done" ] && break; sleep 5; done
 fidelity 1 b mooncake-2x) &
wait
pack 8
