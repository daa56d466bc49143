"""Speed of the engine's hot path: the first 500 Azure conversation requests through paged.

Run with `python -m pytest tests/benchmarks/test_bench_simulate.py --benchmark-enable`.
"""
from __future__ import annotations

import pytest

from harness.model.config import AllocatorConfig, RunConfig
from harness.engine.loop import simulate

workloads = pytest.importorskip("workloads")


@pytest.fixture(scope="module")
def azure_slice():
    return workloads.take(workloads.load_trace("azure-conv"), 500)


@pytest.mark.parametrize("allocator", ["paged", "static"])
def test_bench_simulate_azure_500(benchmark, azure_slice, allocator):
    config = RunConfig(allocator=AllocatorConfig(allocator))
    result = benchmark.pedantic(simulate, args=(config, azure_slice), rounds=3, iterations=1)
    assert result.summary["completed"] == 500
