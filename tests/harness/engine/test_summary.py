from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.engine.loop import simulate
from harness.engine.summary import comparison_table, summarize, weighted_quantile
from reports.schema import SUMMARY_KEYS


def _steps(step_ms, utilization, running):
    n = len(step_ms)
    live = np.round(np.asarray(utilization) * 100).astype(int)
    return pd.DataFrame({
        "step_ms": step_ms, "utilization": utilization, "running": running,
        "backed": [100] * n, "live": live, "reserved": 100 - live, "internal": [0] * n,
        "cached": [0] * n, "free": [0] * n, "largest_free_run": [0] * n, "stale": [0] * n,
        "prefill_tokens": [0] * n,
    })


def _requests():
    return pd.DataFrame({"status": ["completed"], "prefix_hit_tokens": [0], "preemptions": [0],
                         "ttft_s": [0.1], "tpot_s": [0.01], "e2e_s": [1.0]})


def test_means_weight_each_step_by_its_duration():
    steps = _steps([1.0, 3.0], [0.2, 0.6], [2, 4])
    s = summarize(steps, _requests(), budget_slots=100, bytes_per_token=2, output_tokens=10,
                  sim_time_s=0.004)
    assert s["utilization_mean"] == pytest.approx(0.5)
    assert s["mean_running"] == pytest.approx(3.5)
    assert s["utilization_p50"] == 0.6  # the long step holds 75% of the time
    assert s["waste_reserved"] == pytest.approx(0.5)
    assert s["mean_step_ms"] == 2.0
    assert s["peak_backed_bytes"] == 200
    assert s["throughput_tok_s"] == pytest.approx(2500)


def test_weighted_quantile():
    values = np.array([3.0, 1.0, 2.0])
    assert weighted_quantile(values, np.array([1.0, 1.0, 1.0]), 0.5) == 2.0
    assert weighted_quantile(values, np.array([0.0, 10.0, 1.0]), 0.5) == 1.0
    assert np.isnan(weighted_quantile(np.array([]), np.array([]), 0.5))


def test_waste_shares_and_utilization_split_every_backed_slot(tiny_config, random_trace, rng):
    result = simulate(tiny_config("static", slots=2048), random_trace(rng, 40))
    s = result.summary
    shares = [s[k] for k in ("utilization_mean", "waste_reserved", "waste_internal",
                             "waste_external", "waste_cached", "waste_free")]
    assert sum(shares) == pytest.approx(1.0)
    assert s["waste_reserved"] > 0  # static reserves prompt + output up front


def test_comparison_table_has_a_row_per_run(tiny_config, make_trace):
    summary = simulate(tiny_config(), make_trace([10], [3])).summary
    table = comparison_table({"paged": summary, "static": summary})
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| paged |")
    assert set(SUMMARY_KEYS) == set(summary)
