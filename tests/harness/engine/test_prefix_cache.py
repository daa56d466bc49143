"""Prefix-cache hits on a real hashed trace skip prefill work."""
from __future__ import annotations

import pytest

from harness.model.config import AllocatorConfig, RunConfig
from harness.engine.loop import simulate

workloads = pytest.importorskip("workloads")


@pytest.fixture(scope="module")
def mooncake():
    return workloads.take(workloads.load_trace("mooncake-conv"), 50)


@pytest.mark.parametrize("allocator", ["paged", "segmented", "hybrid"])
def test_prefix_hits_on_mooncake_reduce_prefill_tokens(mooncake, allocator):
    def run(enable):
        config = RunConfig(allocator=AllocatorConfig.of(allocator, enable_prefix_cache=enable))
        return simulate(config, mooncake).summary

    cached, uncached = run(True), run(False)
    assert uncached["prefix_hit_tokens"] == 0
    assert cached["prefix_hit_tokens"] > 0
    assert cached["prefill_tokens"] < uncached["prefill_tokens"]


@pytest.mark.parametrize("allocator", ["paged", "hybrid"])
def test_prefix_hit_tokens_never_exceed_the_prompt_under_preemption(allocator):
    """Preempted requests are admitted again and find their own blocks; that is not reuse."""
    trace = workloads.scale_rate(workloads.take(workloads.load_trace("mooncake-conv"), 200), 8)
    config = RunConfig(allocator=AllocatorConfig.of(allocator), budget_slots_override=40_000)
    requests = simulate(config, trace).requests
    assert requests["preemptions"].sum() > 0  # the case that used to count hits again
    assert (requests["prefix_hit_tokens"] <= requests["prompt_tokens"]).all()
