from __future__ import annotations

import pytest

from harness.model.budget import kv_budget
from harness.model.config import AllocatorConfig, ConfigError, RunConfig
from harness.engine.loop import Engine
from harness.model.planner import allocator_capacities, max_model_len_warning, plan_capacity
from harness.model.presets import gpu_preset, model_preset


def test_concurrency_per_allocator_follows_each_policys_rounding():
    params = {"paged": {"block_size": 64}}
    caps = {c.name: c for c in allocator_capacities(10_000, 1000, params=params)}
    assert caps["segmented"].max_concurrency == 10  # 10000 // 1000
    assert caps["paged"].tokens_per_seq == 1024  # 16 blocks of 64
    assert caps["paged"].max_concurrency == 156 // 16  # whole blocks in the pool
    assert caps["static"].tokens_per_seq == 1008
    assert caps["static"].max_concurrency == 9


def test_static_reserves_max_model_len_whatever_the_context():
    caps = {c.name: c for c in allocator_capacities(100_000, 1000, max_model_len=32768)}
    assert caps["static"].max_concurrency == 3
    assert caps["paged"].max_concurrency == 6250 // 63  # 1000 tokens take 63 blocks of 16
    assert caps["segmented"].max_concurrency == 100


def test_ten_million_tokens_on_h200_is_flagged_with_what_to_clamp_to():
    config = RunConfig(model=model_preset("llama3-8b"), gpu=gpu_preset("h200-141gb"), tp=8)
    plan = plan_capacity(config, context=8192, max_model_len=10_000_000)
    slots = kv_budget(config).slots
    (warning,) = plan.warnings
    assert "max_model_len 10,000,000" in warning
    assert "152.6 GiB" in warning  # 10M tokens x 16 KiB per token per GPU
    assert f"Clamp max_model_len to {slots // 16 * 16:,}" in warning


def test_a_length_that_fits_has_no_warning():
    assert max_model_len_warning(RunConfig(), 8192) is None


def test_static_engine_fails_at_start_when_max_model_len_exceeds_memory(make_trace):
    config = RunConfig(allocator=AllocatorConfig.of("static", max_model_len=10_000_000))
    with pytest.raises(ConfigError, match="static preallocation fails at start"):
        Engine(config, make_trace([10], [10]))
