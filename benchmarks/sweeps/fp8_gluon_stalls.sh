#!/usr/bin/env bash
# Where the fp8 decode kernels wait, on the shape furthest from issue 16's 1.7x (32 x 4096
# tokens, block size 16): ncu's warp stall reasons, issue and occupancy figures and shared-memory
# bank conflicts for the committed fp8 launch and for benchmarks/probe_fp8_gluon.py's kernel
# (64-token tiles, 3 stages, one split). One H200, about 2 minutes. Run from the repository root
# with simpy importable (the device README's .whl carry). Everything lands in $OUT/sweep.tgz.
. "$(dirname "$0")/common.sh"
mkdir -p "$W/ncu"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
NCU_PY='import torch
from bench_paged_decode import make_case
from bench_paged_decode_fp8 import LAYOUT, Fp8Case
from probe_fp8_gluon import probe_call
case = make_case(32, 4096, seed=1)
quantized = Fp8Case(case)
tables = case.block_tables(16, LAYOUT, seed=16)
out = torch.empty(case.q.shape, device="cuda", dtype=torch.float32)
gluon = probe_call(quantized, 16, tables, out, "gluon", 64, 3, None, 1)
for call in (quantized.call(16, tables), gluon):
    for _ in range(3):
        call()
    torch.cuda.synchronize()'
METRICS=l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum
METRICS+=,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum,smsp__inst_executed.sum
METRICS+=,l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum
CUDA_VISIBLE_DEVICES=0 timeout 150 ncu --clock-control none \
    --kernel-name regex:"decode_split|decode_fp8_gluon" \
    --launch-skip 1 --launch-count 4 --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
    --metrics "$METRICS" \
    --page raw --csv python3 -c "$NCU_PY" > "$W/ncu/raw.csv" 2> "$W/ncu.log"
pack 5
