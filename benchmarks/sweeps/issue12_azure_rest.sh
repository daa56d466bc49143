#!/usr/bin/env bash
# The Azure run with nothing beside it (its host times are the host's alone), then the executor
# GPU tests that combine_ab.sh's time limit cut off, on one H200 (about 7 minutes). Run from the
# repository root with simpy importable (the device README's .whl carry). Everything lands in
# $OUT/sweep.tgz, with a log per part.
. "$(dirname "$0")/common.sh"
azure 0 270
gpu_tests 0 200 tests \
    tests/harness/gpu/test_gpu_fp8.py tests/harness/gpu/test_gpu_graph_paths.py \
    tests/harness/gpu/test_gpu_host_tier.py tests/harness/gpu/test_gpu_kv_pool.py \
    tests/harness/gpu/test_gpu_mixed_graphs.py tests/harness/gpu/test_gpu_model.py \
    tests/harness/gpu/test_gpu_prompts.py tests/harness/gpu/test_kv_accuracy.py \
    tests/harness/gpu/test_profile.py tests/harness/gpu/test_speculative.py
pack
