"""Loading the bundled 19,366-row Azure trace takes well under a second (vectorized pandas)."""
from __future__ import annotations

import time

from workloads import load_trace


def test_load_azure_trace(benchmark):
    trace = benchmark(load_trace, "azure-conv")
    assert len(trace) == 19_366
    # Also guarded when benchmarks are disabled (the default in pyproject's addopts).
    start = time.perf_counter()
    load_trace("azure-conv")
    assert time.perf_counter() - start < 1.0


def test_load_mooncake_trace(benchmark):
    trace = benchmark.pedantic(load_trace, args=("mooncake-conv",), rounds=3, iterations=1)
    assert len(trace) == 12_031
