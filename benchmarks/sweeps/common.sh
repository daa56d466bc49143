# Sourced by the sweeps, which run from the repository root with simpy importable (the device
# README's .whl carry): $W, a work folder whose contents end up in $OUT/sweep.tgz (pack; the
# device tool returns at most 8 files), and the pieces several sweeps share.
set -u
OUT=${OUT:?set OUT}
W=$(mktemp -d)

# side_by_side A B: shell functions A and B, each given its GPU index: at once on GPUs 0 and 1
# where the machine has two, else one after the other on GPU 0.
side_by_side() {
  if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
    "$1" 0 &
    "$2" 1 &
    wait
  else
    "$1" 0
    "$2" 0
  fi
}

# azure GPU SECONDS: issue 12's Azure run (the step bins of benchmarks/results'
# gpu_steps_<gpu>.csv and gpu_decode_<gpu>.csv) into $W/azure, logged to $W/azure.log.
azure() {
  mkdir -p "$W/azure"
  CUDA_VISIBLE_DEVICES=$1 timeout "$2" python3 benchmarks/bench_gpu_decode.py --out "$W/azure" \
      --budget-slots 393216 --baseline-requests 0 > "$W/azure.log" 2>&1
}

# gpu_tests GPU SECONDS LOG ARGS...: pytest ARGS on that GPU for at most SECONDS, logged to
# $W/LOG.log.
gpu_tests() {
  local gpu=$1 seconds=$2 log=$3
  shift 3
  CUDA_VISIBLE_DEVICES=$gpu timeout "$seconds" python3 -m pytest -q -p no:cacheprovider "$@" \
      > "$W/$log.log" 2>&1
}

# versions COMMIT FILE...: each FILE as the working tree has it and as COMMIT had it (from git,
# or from benchmarks/sweeps/old/ where the copy has no .git), kept in $W/files/{new,old}; then
# `use old` or `use new` puts one version of every such FILE in place.
versions() {
  local commit=$1 f
  shift
  VERSIONED="$*"
  mkdir -p "$W/files/new" "$W/files/old"
  for f in $VERSIONED; do
    cp "$f" "$W/files/new/$(basename "$f")"
    git show "$commit:$f" > "$W/files/old/$(basename "$f")" 2>/dev/null \
        || cp "benchmarks/sweeps/old/$(basename "$f")" "$W/files/old/$(basename "$f")"
  done
}
use() {
  local f
  for f in $VERSIONED; do cp "$W/files/$1/$(basename "$f")" "$f"; done
}

# pack [LINES]: the last LINES (3) of each log printed, and $W into $OUT/sweep.tgz.
pack() {
  tail -n "${1:-3}" "$W"/*.log
  tar -czf "$OUT/sweep.tgz" -C "$W" .
}

# fp8_kernel NAME SECONDS SCRIPT: kernels/fp8_decode.py on GPU 0, packed after each part: its GPU
# tests, the probe SCRIPT for at most SECONDS into $W/NAME (logged to $W/NAME.log), the fp8 table
# (bench_paged_decode_fp8.py into $W/fp8), the paged decode kernel tests and the executor's fp8
# GPU tests (a head_dim-128 model's decode through the kernel among them).
fp8_kernel() {
  mkdir -p "$W/$1" "$W/fp8"
  gpu_tests 0 100 fp8_decode tests/kernels/test_fp8_decode.py
  pack 3
  CUDA_VISIBLE_DEVICES=0 timeout "$2" python3 "$3" --out "$W/$1" > "$W/$1.log" 2>&1
  pack 3
  CUDA_VISIBLE_DEVICES=0 timeout 150 python3 benchmarks/bench_paged_decode_fp8.py --out "$W/fp8" \
      > "$W/fp8.log" 2>&1
  pack 3
  gpu_tests 0 100 paged_decode tests/kernels/test_paged_decode.py
  pack 3
  gpu_tests 0 200 executor_fp8 tests/harness/gpu/test_gpu_fp8.py tests/harness/gpu/test_kv_accuracy.py
  pack 4
}
