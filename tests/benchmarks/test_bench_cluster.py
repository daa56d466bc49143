"""Speed of a cluster run: the first 150 Mooncake conversation requests on 8 paged replicas
behind each router that behaves differently (prefix-aware also reads every replica's cache).

Run with `python -m pytest tests/benchmarks/test_bench_cluster.py --benchmark-enable`; the full
trace's wall time is in the README.
"""
from __future__ import annotations

import pytest

from harness.cluster.run import simulate
from harness.model.config import AllocatorConfig, RunConfig
from harness.model.presets import model_preset

workloads = pytest.importorskip("workloads")


@pytest.fixture(scope="module")
def mooncake_slice():
    return workloads.take(workloads.load_trace("mooncake-conv"), 150)


@pytest.mark.parametrize("router", ["round-robin", "prefix-aware"])
def test_bench_cluster_mooncake_150_on_8(benchmark, mooncake_slice, router):
    # A 128k-context model: Mooncake prompts run past llama3-8b's 8k context.
    config = RunConfig(model=model_preset("llama3.1-8b"), allocator=AllocatorConfig("paged"),
                       replicas=8, router=router)
    result = benchmark.pedantic(simulate, args=(config, mooncake_slice), rounds=3, iterations=1)
    assert result.summary["completed"] == 150
