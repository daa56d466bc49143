#!/usr/bin/env bash
# The measurements behind `--decode-balance auto` as the default, issue 16's fp8 stall reading,
# and the TP=4 profile, in one call of the four-H200 kind (about 9 minutes). Run from the
# repository root with simpy importable (the device README's .whl carry). Everything lands in
# one tarball, $OUT/sweep.tgz, with a log per part: the device tool returns at most 8 files.
#   Phase A, one job per GPU:
#     0: the Azure run (issue 12's step bins) under the default, auto;
#     1, 2: the profiles of llama3-8b and llama3.1-8b (issue 13's) under auto;
#     3: bench_decode_balance (auto's verdict), then Nsight Compute on the split decode kernel,
#        bf16 then fp8 (raw metrics, stall reasons among them), then fp8 launch shapes.
#   Phase B: the fidelity runs against the new llama3-8b profile, a slice per GPU on 0-2.
#   Phase C: the TP=4 profile of llama3-8b and the TP=4 runs priced by it (issue 18).
. "$(dirname "$0")/common.sh"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
mkdir -p "$W/azure" "$W/profile" "$W/balance" "$W/ncu" "$W/fp8tune" "$W/fid_a" "$W/fid_b" \
    "$W/fid_c" "$W/tp4"
NCU_PY='import sys; sys.path.insert(0, "benchmarks")
import torch
from bench_paged_decode import make_case
from bench_paged_decode_fp8 import LAYOUT, Fp8Case, bf16_call
case = make_case(64, 32768, seed=1)
tables = case.block_tables(16, LAYOUT, seed=16)
for call in (bf16_call(case, 16, tables), Fp8Case(case).call(16, tables)):
    for _ in range(3):
        call()
    torch.cuda.synchronize()'
(export CUDA_VISIBLE_DEVICES=0
 timeout 170 python3 benchmarks/bench_gpu_decode.py --out "$W/azure" --budget-slots 393216 \
     --baseline-requests 0 > "$W/azure.log" 2>&1) &
(export CUDA_VISIBLE_DEVICES=1
 timeout 175 python3 -m harness.cli profile --model llama3-8b --block-sizes 16,64,256 \
     --out "$W/profile" --time-limit-s 165 > "$W/profile_8b.log" 2>&1) &
(export CUDA_VISIBLE_DEVICES=2
 timeout 175 python3 -m harness.cli profile --model llama3.1-8b --block-sizes 16,64,256 \
     --out "$W/profile" --time-limit-s 165 > "$W/profile_81.log" 2>&1) &
(export CUDA_VISIBLE_DEVICES=3
 timeout 100 python3 benchmarks/bench_decode_balance.py --out "$W/balance" > "$W/balance.log" 2>&1
 timeout 40 ncu --clock-control none --kernel-name regex:decode_split --launch-skip 1 \
     --launch-count 4 --section SpeedOfLight --section MemoryWorkloadAnalysis \
     --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
     --page raw --csv python3 -c "$NCU_PY" > "$W/ncu/raw.csv" 2> "$W/ncu.log"
 timeout 40 python3 benchmarks/bench_paged_decode_fp8.py \
     --tune-configs default,128:8:2,128:8:3,256:8:2,64:4:3,64:4:4,32:4:4 \
     --tune-shapes 64x32768,128x32768 --block-sizes 16 --out "$W/fp8tune" > "$W/fp8tune.log" 2>&1) &
wait
(export CUDA_VISIBLE_DEVICES=0
 timeout 200 python3 benchmarks/bench_fidelity.py --profile-dir "$W/profile" --out "$W/fid_a" \
     --slices azure-10x --time-limit-s 190 > "$W/fid_a.log" 2>&1) &
(export CUDA_VISIBLE_DEVICES=1
 timeout 200 python3 benchmarks/bench_fidelity.py --profile-dir "$W/profile" --out "$W/fid_b" \
     --slices mooncake-2x --time-limit-s 190 > "$W/fid_b.log" 2>&1) &
(export CUDA_VISIBLE_DEVICES=2
 timeout 200 python3 benchmarks/bench_fidelity.py --profile-dir "$W/profile" --out "$W/fid_c" \
     --slices azure-4x --time-limit-s 190 > "$W/fid_c.log" 2>&1) &
wait
timeout 80 python3 -m harness.cli profile --model llama3-8b --tp 4 --block-sizes 16 \
    --out "$W/tp4" > "$W/tp4_profile.log" 2>&1
timeout 120 python3 benchmarks/bench_gpu_tp.py --tp 4 --profile-dir "$W/tp4" --out "$W/tp4" \
    > "$W/tp4_run.log" 2>&1
pack 4
