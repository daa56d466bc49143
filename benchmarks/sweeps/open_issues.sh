#!/usr/bin/env bash
# The GPU measurements issues 12, 16 and 18 still need, in one call of the four-H200 kind
# (about 9 minutes; two GPUs do without the TP=4 part). Run from the repository root with simpy
# importable (the device README's .whl carry). Everything lands in one tarball, $OUT/sweep.tgz,
# with a log per part: the device tool returns at most 8 files.
#   GPU 0:    the Azure run without, then with balanced decode (issue 12's step bins, and the
#             host preparation since prompts are drawn outside it).
#   GPU 1:    Nsight Compute on the split decode kernel, bf16 against fp8 (issue 16: why fp8
#             moves about 60% of the copy bandwidth), then probe_steps (where a small mixed
#             step's device time goes, kernel by kernel).
#   GPU 2, 3: the TP=2 profile of llama3-8b, then the TP=2 run priced by it (issue 18).
#   All four: the TP=4 all-reduces and runs of llama3-8b and llama3-70b (issue 18).
. "$(dirname "$0")/common.sh"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
GPUS=$(nvidia-smi -L | wc -l)
mkdir -p "$W/balanced" "$W/default" "$W/ncu" "$W/probe" "$W/tp2" "$W/tp4"
(export CUDA_VISIBLE_DEVICES=0
 timeout 170 python3 benchmarks/bench_gpu_decode.py --out "$W/default" --budget-slots 393216 \
     --baseline-requests 0 > "$W/default.log" 2>&1
 timeout 170 python3 benchmarks/bench_gpu_decode.py --out "$W/balanced" --budget-slots 393216 \
     --baseline-requests 0 --decode-balance > "$W/balanced.log" 2>&1) &
(export CUDA_VISIBLE_DEVICES=1
 timeout 150 ncu --clock-control none --kernel-name regex:decode_split --launch-skip 4 \
     --launch-count 4 --section SpeedOfLight --section MemoryWorkloadAnalysis \
     --section WarpStateStats --section Occupancy --csv --page details \
     python3 benchmarks/bench_paged_decode_fp8.py --tune-configs default \
     --tune-shapes 64x32768 --block-sizes 16 --out "$W/ncu" > "$W/ncu.log" 2>&1
 timeout 170 python3 benchmarks/probe_steps.py --out "$W/probe" > "$W/probe.log" 2>&1) &
if [ "$GPUS" -ge 4 ]; then
  (export CUDA_VISIBLE_DEVICES=2,3
   timeout 150 python3 -m harness.cli profile --model llama3-8b --tp 2 --block-sizes 16 \
       --out "$W/tp2" > "$W/tp2_profile.log" 2>&1
   timeout 150 python3 benchmarks/bench_gpu_tp.py --tp 2 --models llama3-8b \
       --profile-dir "$W/tp2" --out "$W/tp2" > "$W/tp2_run.log" 2>&1) &
  wait
  timeout 200 python3 benchmarks/bench_gpu_tp.py --tp 4 --out "$W/tp4" > "$W/tp4_run.log" 2>&1
else
  wait
  timeout 150 python3 -m harness.cli profile --model llama3-8b --tp 2 --block-sizes 16 \
      --out "$W/tp2" > "$W/tp2_profile.log" 2>&1
  timeout 150 python3 benchmarks/bench_gpu_tp.py --tp 2 --models llama3-8b \
      --profile-dir "$W/tp2" --out "$W/tp2" > "$W/tp2_run.log" 2>&1
fi
pack
