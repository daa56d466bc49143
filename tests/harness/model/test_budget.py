from __future__ import annotations

import dataclasses

import pytest

from harness.model.budget import (
    BudgetError,
    activation_bytes,
    bytes_per_token,
    kv_budget,
    kv_heads_per_gpu,
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
