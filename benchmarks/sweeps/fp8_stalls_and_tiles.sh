#!/usr/bin/env bash
# Where the fp8 decode loop waits, on the shape furthest from issue 16's 1.7x (32 x 4096 tokens,
# block size 16): ncu's warp stall reasons for the bf16 and the fp8 launch; then fp8 launch shapes
# of 64-token tiles and 8 warps tried on the layout of V in runs of 16 tokens; one H200, about 3
# minutes. Run from the repository root with simpy importable (the device README's .whl carry).
# Everything lands in $OUT/sweep.tgz, with a log per part.
. "$(dirname "$0")/common.sh"
mkdir -p "$W/ncu" "$W/tune"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
NCU_PY='import torch
from bench_paged_decode import make_case
from bench_paged_decode_fp8 import LAYOUT, Fp8Case, bf16_call
case = make_case(32, 4096, seed=1)
tables = case.block_tables(16, LAYOUT, seed=16)
for call in (bf16_call(case, 16, tables), Fp8Case(case).call(16, tables)):
    for _ in range(3):
        call()
    torch.cuda.synchronize()'
CUDA_VISIBLE_DEVICES=0 timeout 60 ncu --clock-control none --kernel-name regex:decode_split \
    --launch-skip 1 --launch-count 4 --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
    --page raw --csv python3 -c "$NCU_PY" > "$W/ncu/raw.csv" 2> "$W/ncu.log"
CUDA_VISIBLE_DEVICES=0 timeout 150 python3 benchmarks/bench_paged_decode_fp8.py --out "$W/tune" \
    --tune-configs default,64:4:2:128,64:4:3:128,64:4:3:168,128:8:2:128,128:4:2:96 \
    --tune-shapes 32x4096,64x4096,8x32768 --block-sizes 16,64 > "$W/tune.log" 2>&1
pack 40
