#!/usr/bin/env bash
# After decode_auto.sh: the fitted model's validation and the tensor-parallel runs priced by
# the committed profiles measured under `--decode-balance auto`, in one call of the four-H200
# kind (about 5 minutes). Run from the repository root with simpy importable (the device
# README's .whl carry); everything lands in $OUT/sweep.tgz.
#   1: the fidelity runs, a slice per GPU on 0-2, fitted to benchmarks/results' llama3-8b profile;
#   2: the TP=2 profile of llama3-8b under auto, then the TP=2 run priced by it, on GPUs 0-1;
#   3: the TP=4 runs priced by benchmarks/results' TP=4 profile, on all four.
# Arguments: the parts to run, of "fidelity tp" (default both).
. "$(dirname "$0")/common.sh"
PARTS=${*:-fidelity tp}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p "$W/fid_a" "$W/fid_b" "$W/fid_c" "$W/tp2" "$W/tp4"
if [[ " $PARTS " == *" fidelity "* ]]; then
gpu=0
for part in a:azure-10x b:mooncake-2x c:azure-4x; do
  (export CUDA_VISIBLE_DEVICES=$gpu
   timeout 170 python3 benchmarks/bench_fidelity.py --profile-dir benchmarks/results \
       --out "$W/fid_${part%%:*}" --slices "${part#*:}" --time-limit-s 160 \
       > "$W/fid_${part%%:*}.log" 2>&1) &
  gpu=$((gpu + 1))
done
wait
fi
if [[ " $PARTS " == *" tp "* ]]; then
(export CUDA_VISIBLE_DEVICES=0,1
 timeout 90 python3 -m harness.cli profile --model llama3-8b --tp 2 --block-sizes 16 \
     --out "$W/tp2" > "$W/tp2_profile.log" 2>&1
 timeout 90 python3 benchmarks/bench_gpu_tp.py --tp 2 --models llama3-8b --profile-dir "$W/tp2" \
     --out "$W/tp2" > "$W/tp2_run.log" 2>&1)
timeout 150 python3 benchmarks/bench_gpu_tp.py --tp 4 --profile-dir benchmarks/results \
    --out "$W/tp4" > "$W/tp4_run.log" 2>&1
fi
pack 5
