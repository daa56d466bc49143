from __future__ import annotations

import dataclasses

import pytest

from harness.model.config import RunConfig
from harness.model.costmodel import (
    COMPUTE_EFFICIENCY,
    MEMORY_EFFICIENCY,
    STEP_OVERHEAD_S,
    CostModel,
    decode_bandwidth_ratio,
    decode_efficiency,
)
from harness.model.presets import model_preset


def _step(cost, *, prefill=0, decode=0, prefill_ctx=0, decode_ctx=0, pairs=0, swap=0):
    return cost.step_s(prefill_tokens=prefill, decode_tokens=decode,
                       prefill_context_tokens=prefill_ctx, decode_context_tokens=decode_ctx,
                       prefill_attention_pairs=pairs, swap_tokens=swap)


def test_small_decode_is_bound_by_reading_the_weights():
    config = RunConfig()
    cost = CostModel.from_config(config)
    weights_s = 2 * config.model.num_params / (config.gpu.bandwidth_bytes_s * MEMORY_EFFICIENCY)
    step = _step(cost, decode=1, decode_ctx=1000)
    assert weights_s + STEP_OVERHEAD_S < step < weights_s * 1.05 + STEP_OVERHEAD_S


def test_long_prefill_is_bound_by_compute():
    config = RunConfig()
    cost = CostModel.from_config(config)
    tokens = 8192
    pairs = tokens * (tokens + 1) // 2
    step = _step(cost, prefill=tokens, prefill_ctx=tokens, pairs=pairs)
    flops = 2 * config.model.num_params * tokens + cost.attention_flops_per_pair * pairs
    assert step == pytest.approx(flops / (config.gpu.bf16_flops * COMPUTE_EFFICIENCY)
                                 + STEP_OVERHEAD_S)


def test_kv_reads_slow_decode_and_a_slower_kernel_slows_it_more():
    config = RunConfig()
    fast = CostModel.from_config(config)
    slow = CostModel.from_config(config, decode_efficiency=0.5)
    short = _step(fast, decode=64, decode_ctx=64 * 100)
    long = _step(fast, decode=64, decode_ctx=64 * 4000)
    assert long > short
    assert _step(slow, decode=64, decode_ctx=64 * 4000) > long


def test_swap_traffic_costs_pcie_time():
    cost = CostModel.from_config(RunConfig())
    base = _step(cost, decode=1, decode_ctx=10)
    swapped = _step(cost, decode=1, decode_ctx=10, swap=10000)
    assert swapped - base == pytest.approx(10000 * 131072 / cost.pcie_bytes_s)


def test_tensor_parallel_splits_weights_and_adds_all_reduces():
    config = RunConfig(model=model_preset("llama3-70b"), tp=4)
    cost = CostModel.from_config(config)
    alone = dataclasses.replace(cost, allreduce_latency_s=0.0)
    assert cost.weight_bytes == 2 * config.model.num_params // 4
    assert _step(cost, decode=8, decode_ctx=800) > _step(alone, decode=8, decode_ctx=800)


BENCH = """# device: NVIDIA H100 80GB HBM3
# torch: 2.5
batch,context,block_size,layout,impl,median_us,kv_bytes,bandwidth_gbs,copy_bandwidth_gbs,max_abs_err
8,4096,16,shuffled,paged,10,1,1500,3000,0
8,4096,16,shuffled,sdpa,10,1,2000,3000,0
8,4096,64,shuffled,paged,10,1,1900,3000,0
8,4096,16,contiguous,paged,10,1,1800,3000,0
"""


def test_efficiency_is_paged_over_sdpa_bandwidth_per_block_size(tmp_path):
    (tmp_path / "paged_decode_h100.csv").write_text(BENCH)
    assert decode_efficiency("h100-80gb", 16, contiguous=False, results_dir=tmp_path) == (
        0.75, "paged_decode_h100.csv")
    assert decode_efficiency("h100-80gb", 128, contiguous=False, results_dir=tmp_path)[0] == 0.95
    assert decode_efficiency("h100-80gb", 16, contiguous=True, results_dir=tmp_path)[0] == 0.9


def test_no_table_for_the_gpu_means_full_efficiency(tmp_path):
    (tmp_path / "paged_decode_h100.csv").write_text(BENCH)
    assert decode_efficiency("a100-80gb", 16, contiguous=False, results_dir=tmp_path) == (1.0, None)


FP8_BENCH = """# device: NVIDIA H200
batch,context,block_size,layout,impl,median_us,kv_bytes,bandwidth_gbs,copy_bandwidth_gbs,max_abs_err,kv_dtype
8,4096,16,shuffled,paged,10,2,1000,3000,0,bf16
8,4096,16,shuffled,paged,10,1,600,3000,0,fp8
32,4096,16,shuffled,paged,10,2,2000,3000,0,bf16
32,4096,16,shuffled,paged,10,1,1000,3000,0,fp8
8,4096,64,shuffled,paged,10,2,1000,3000,0,bf16
8,4096,64,shuffled,paged,10,1,900,3000,0,fp8
"""


def test_fp8_bandwidth_ratio_is_the_median_over_shapes_at_the_nearest_block_size(tmp_path):
    (tmp_path / "paged_decode_fp8_h200.csv").write_text(FP8_BENCH)
    assert decode_bandwidth_ratio("fp8", "h200-141gb", 16, results_dir=tmp_path) == (
        0.55, "paged_decode_fp8_h200.csv")
    assert decode_bandwidth_ratio("fp8", "h200-141gb", 128, results_dir=tmp_path)[0] == 0.9
    # Another GPU takes the measured kernel rather than a guess; bf16 is its own reference.
    assert decode_bandwidth_ratio("fp8", "h100-80gb", 16, results_dir=tmp_path)[0] == 0.55
    assert decode_bandwidth_ratio("bf16", "h200-141gb", 16, results_dir=tmp_path) == (1.0, None)
    assert decode_bandwidth_ratio("fp8", "h200-141gb", 16, results_dir=tmp_path / "no") == (
        1.0, None)


def test_the_fp8_table_is_not_taken_for_the_bf16_kernels_efficiency(tmp_path):
    (tmp_path / "paged_decode_fp8_h100.csv").write_text(FP8_BENCH)
    (tmp_path / "paged_decode_h100.csv").write_text(BENCH)
    assert decode_efficiency("h100-80gb", 16, contiguous=False, results_dir=tmp_path) == (
        0.75, "paged_decode_h100.csv")


def test_fp8_decode_reads_half_the_bytes_at_the_measured_bandwidth():
    bf16 = CostModel.from_config(RunConfig())
    fp8 = CostModel.from_config(RunConfig(kv_dtype="fp8"), decode_efficiency=0.6)
    assert fp8.bytes_per_token * 2 == bf16.bytes_per_token
    # Memory-bound decode: the KV part of the step is bytes / (bandwidth x efficiency).
    kv = {cost: _step(cost, decode=64, decode_ctx=64 * 8000) - _step(cost, decode=64)
          for cost in (bf16, fp8)}
    assert kv[fp8] == pytest.approx(kv[bf16] * 0.5 / 0.6)
    swap = {cost: _step(cost, decode=1, swap=1000) - _step(cost, decode=1) for cost in (bf16, fp8)}
    assert swap[fp8] == pytest.approx(swap[bf16] / 2)
