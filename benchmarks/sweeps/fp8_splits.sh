#!/usr/bin/env bash
# kernels/fp8_decode.py's launch shape on one H200 (common.sh's fp8_kernel): its GPU tests, the
# probe of split counts, warps and buffers (benchmarks/probe_fp8_splits.py), the fp8 table
# (paged_decode_fp8_<gpu>.csv, its bf16 rows beside), the paged decode kernel tests and the
# executor's fp8 GPU tests. About 8 minutes. Run from the repository root with simpy importable
# (the device README's .whl carry). Everything lands in $OUT/sweep.tgz (packed after each part),
# with a log per part. The committed probe table came from a run with the table step before the
# probe.
. "$(dirname "$0")/common.sh"
export PYTHONPATH=${PYTHONPATH:-.}:benchmarks
fp8_kernel splits 150 benchmarks/probe_fp8_splits.py
