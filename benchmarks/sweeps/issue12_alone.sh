#!/usr/bin/env bash
# The Azure run with nothing beside it (its host times are the host's alone), then the GPU tests
# of the executor that issue12_graph_inputs.sh leaves out, on one H200 (about 7 minutes). Run
# from the repository root with simpy importable (the device README's .whl carry). Everything
# lands in $OUT/sweep.tgz, with a log per part.
. "$(dirname "$0")/common.sh"
azure 0 260
gpu_tests 0 170 tests \
    tests/harness/gpu/test_gpu_engine.py tests/harness/gpu/test_gpu_fp8.py \
    tests/harness/gpu/test_speculative.py tests/harness/gpu/test_gpu_host_tier.py \
    tests/harness/gpu/test_gpu_model.py tests/harness/gpu/test_gpu_decoding.py
pack
