. benchmarks/sweeps/common.sh
azure 0 270
CUDA_VISIBLE_DEVICES=0 timeout 200 python3 -m pytest -q -p no:cacheprovider \
    tests/harness/gpu/test_gpu_fp8.py tests/harness/gpu/test_gpu_graph_paths.py \
    tests/harness/gpu/test_gpu_host_tier.py tests/harness/gpu/test_gpu_kv_pool.py \
    tests/harness/gpu/test_gpu_mixed_graphs.py tests/harness/gpu/test_gpu_model.py \
    tests/harness/gpu/test_gpu_prompts.py tests/harness/gpu/test_kv_accuracy.py \
    tests/harness/gpu/test_profile.py tests/harness/gpu/test_speculative.py > "$W/tests.log" 2>&1
pack
