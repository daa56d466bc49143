"""The smallest number of replicas that serves a trace at its recorded rate under a TTFT SLO.

A replica count serves the trace when every request completes and the p99 TTFT is within the
SLO. More replicas never serve worse under the routers here in practice, but the search does not
rely on it blindly: it doubles the count until one serves (or max_replicas fails), then bisects
between the last failing and the first serving count, so it runs O(log N) cluster simulations.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from harness.cluster.run import simulate
from harness.engine.loop import RunResult
from harness.model.config import RunConfig


@dataclass(frozen=True)
class ReplicaSearch:
    """The answer (None when even max_replicas does not serve) and every run the search made."""

    replicas: int | None
    runs: dict[int, RunResult]


def serves(result: RunResult, slo_ttft_s: float) -> bool:
    s = result.summary
    return s["completed"] == s["requests"] and s["ttft_p99_s"] <= slo_ttft_s


def smallest_replicas(config: RunConfig, trace: pd.DataFrame, slo_ttft_s: float, *,
                      max_replicas: int = 64,
                      on_run: Callable[[int, RunResult], None] | None = None) -> ReplicaSearch:
    runs: dict[int, RunResult] = {}

    def ok(count: int) -> bool:
        if count not in runs:
            runs[count] = simulate(dataclasses.replace(config, replicas=count), trace)
            if on_run is not None:
                on_run(count, runs[count])
        return serves(runs[count], slo_ttft_s)

    low, high = 0, 1  # low fails (0 replicas serve nothing), high is the count to try
    while not ok(high):
        if high >= max_replicas:
            return ReplicaSearch(None, runs)
        low, high = high, min(2 * high, max_replicas)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if ok(mid) else (mid, high)
    return ReplicaSearch(high, runs)
