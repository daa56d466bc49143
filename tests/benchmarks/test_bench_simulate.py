"""Speed of the engine's hot path: the first Azure conversation requests through an allocator.

Run with `python -m pytest tests/benchmarks/test_bench_simulate.py --benchmark-enable`.
"""
from __future__ import annotations

import pytest

from harness.model.config import AllocatorConfig, RunConfig
from harness.engine.loop import simulate

workloads = pytest.importorskip("workloads")


@pytest.fixture(scope="module")
def azure_trace():
    return workloads.load_trace("azure-conv")


@pytest.fixture(scope="module")
def azure_slice(azure_trace):
    return workloads.take(azure_trace, 500)


@pytest.mark.parametrize("allocator", ["paged", "static"])
def test_bench_simulate_azure_500(benchmark, azure_slice, allocator):
    config = RunConfig(allocator=AllocatorConfig(allocator))
    result = benchmark.pedantic(simulate, args=(config, azure_slice), rounds=3, iterations=1)
    assert result.summary["completed"] == 500


@pytest.mark.parametrize("segment_tokens", [1, 16])
def test_bench_simulate_segmented_small_segments_azure_300(benchmark, azure_trace, segment_tokens):
    """Small segments mean many live segments: choosing the one to fill must not scan them all
    (it did, and one-token segments never finished a replay)."""
    requests = workloads.take(azure_trace, 300)
    config = RunConfig(allocator=AllocatorConfig.of("segmented", segment_tokens=segment_tokens))
    result = benchmark.pedantic(simulate, args=(config, requests), rounds=3, iterations=1)
    assert result.summary["completed"] == 300
