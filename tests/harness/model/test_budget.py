from __future__ import annotations

import dataclasses

import pytest

from harness.model.budget import (
    BudgetError,
    activation_bytes,
    bytes_per_token,
    kv_budget,
    kv_heads_per_gpu,
    scale_bytes,
    weight_bytes,
)
from harness.model.config import RunConfig
from harness.model.presets import gpu_preset, model_preset


def test_llama3_8b_bf16_takes_128_kib_per_token():
    assert bytes_per_token(model_preset("llama3-8b")) == 131072  # 2 * 32 * 8 * 128 * 2


def test_kv_heads_split_then_replicate_with_tp():
    m = model_preset("llama3-70b")  # 8 KV heads
    assert [kv_heads_per_gpu(m, tp) for tp in (1, 2, 4, 8, 16, 32)] == [8, 4, 2, 1, 1, 1]
    assert bytes_per_token(m, 16) == bytes_per_token(m, 8)


def test_tp_that_does_not_divide_heads_is_an_error():
    with pytest.raises(BudgetError, match="tp 3"):
        bytes_per_token(model_preset("llama3-8b"), 3)


def test_llama3_8b_on_h100_budget_is_memory_times_utilization_minus_weights_and_activations():
    config = RunConfig(model=model_preset("llama3-8b"), gpu=gpu_preset("h100-80gb"))
    budget = kv_budget(config)
    usable = int(config.gpu.memory_bytes * 0.9)
    expected = usable - weight_bytes(config.model) - activation_bytes(config)
    assert budget.kv_bytes == expected
    assert budget.slots == expected // 131072
    # vLLM reports about 54-55 GiB of KV cache for Llama-3-8B on one H100 at 0.9.
    assert 52 * 2**30 < budget.kv_bytes < 57 * 2**30


def test_override_skips_the_memory_arithmetic():
    budget = kv_budget(RunConfig(budget_slots_override=1000))
    assert budget.slots == 1000
    assert budget.kv_bytes == 1000 * 131072


def test_weights_that_do_not_fit_are_an_error_naming_the_fix():
    config = RunConfig(model=model_preset("llama3-70b"), gpu=gpu_preset("h100-80gb"))
    with pytest.raises(BudgetError, match="raise tp"):
        kv_budget(config)
    assert kv_budget(dataclasses.replace(config, tp=4)).slots > 0


def test_fp8_takes_one_byte_per_element_and_holds_twice_the_tokens():
    model = model_preset("llama3-8b")
    assert bytes_per_token(model, kv_dtype="fp8") * 2 == bytes_per_token(model)
    bf16 = kv_budget(RunConfig())
    fp8 = kv_budget(RunConfig(kv_dtype="fp8"))
    assert fp8.bytes_per_token * 2 == bf16.bytes_per_token
    # Twice the tokens, but for the scales' few bytes and the rounding to whole tokens.
    assert abs(fp8.slots - 2 * bf16.slots) <= 1


def test_fp8_scales_are_counted_out_of_the_kv_memory():
    config = RunConfig(model=model_preset("llama3-70b"), tp=4, kv_dtype="fp8")
    scales = scale_bytes(config.model, config.tp, config.kv_dtype)
    # One float32 for K and one for V per layer and KV head on this GPU.
    assert scales == 2 * 80 * kv_heads_per_gpu(config.model, 4) * 4
    assert scale_bytes(config.model, config.tp) == 0
    fp8 = kv_budget(config)
    bf16 = kv_budget(dataclasses.replace(config, kv_dtype="bf16"))
    assert fp8.scale_bytes == scales and bf16.scale_bytes == 0
    assert fp8.kv_bytes == bf16.kv_bytes - scales
    assert fp8.slots == fp8.kv_bytes // fp8.bytes_per_token
