"""The all-reduce term fitted from a sweep table: recovered from synthetic measurements, found
by GPU family and width, and used by the cost model in place of the datasheet guess."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from harness.engine.executor import CostModelExecutor, KVGeometry
from harness.model.allreduce import (
    ALLREDUCE_COLUMNS,
    AllReduceFitError,
    fit_allreduce,
    measured_allreduce,
)
from harness.model.config import RunConfig
from harness.model.costmodel import CostModel

HIDDEN = 4096
TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def sweep(tp: int, latency_s: float, bytes_s: float, *, noise: float = 0.0, seed: int = 0):
    """A sweep table as bench_gpu_tp.py writes it, from a known latency and bandwidth."""
    rng = np.random.default_rng(seed)
    size = np.array(TOKENS) * HIDDEN * 2
    seconds = (latency_s + size / bytes_s) * (1 + noise * rng.standard_normal(len(size)))
    return pd.DataFrame({
        "tp": tp, "tokens": TOKENS, "hidden": HIDDEN, "dtype_bytes": 2, "message_bytes": size,
        "latency_us": seconds * 1e6, "bus_gbs": 0.0, "mode": "graph",
    })[list(ALLREDUCE_COLUMNS)]


def test_fit_recovers_latency_and_bandwidth():
    fit = fit_allreduce(sweep(2, 12e-6, 300e9), 2)
    assert fit.latency_s == pytest.approx(12e-6, rel=1e-9)
    assert fit.bytes_s == pytest.approx(300e9, rel=1e-9)
    assert fit.points == len(TOKENS) and fit.max_relative_error < 1e-9


def test_noisy_fit_stays_close_at_both_ends():
    fit = fit_allreduce(sweep(4, 20e-6, 200e9, noise=0.03, seed=1), 4)
    assert fit.latency_s == pytest.approx(20e-6, rel=0.1)
    assert fit.bytes_s == pytest.approx(200e9, rel=0.1)
    assert fit.max_relative_error < 0.15


def test_fit_picks_the_width_and_needs_two_sizes():
    table = pd.concat([sweep(2, 10e-6, 300e9), sweep(4, 15e-6, 250e9)])
    assert fit_allreduce(table, 4).bytes_s == pytest.approx(250e9)
    with pytest.raises(AllReduceFitError, match="tp 8"):
        fit_allreduce(table, 8)


def test_a_negative_intercept_is_refitted_as_bandwidth_alone():
    table = sweep(2, 0.0, 300e9)
    table.loc[0, "latency_us"] *= 0.5  # the smallest message faster than any latency allows
    fit = fit_allreduce(table, 2)
    assert fit.latency_s == 0.0 and fit.bytes_s > 0


def _write(path, table):
    path.write_text("# device: NVIDIA H200\n# command: test\n" + table.to_csv(index=False))


def test_measured_allreduce_is_found_by_family_and_width(tmp_path):
    _write(tmp_path / "allreduce_h200.csv", sweep(2, 10e-6, 300e9))
    fit = measured_allreduce("h200-141gb", 2, results_dir=tmp_path)
    assert fit.source == "allreduce_h200.csv" and fit.bytes_s == pytest.approx(300e9)
    assert measured_allreduce("h200-141gb", 4, results_dir=tmp_path) is None
    assert measured_allreduce("h100-80gb", 2, results_dir=tmp_path) is None
    assert measured_allreduce("h200-141gb", 1, results_dir=tmp_path) is None


def test_cost_model_prices_all_reduces_with_the_fit(tmp_path):
    config = RunConfig(tp=2)
    fit = fit_allreduce(sweep(2, 10e-6, 300e9), 2)
    fitted = CostModel.from_config(config, allreduce=fit)
    guessed = CostModel.from_config(config)
    alone = dataclasses.replace(fitted, allreduce_latency_s=0.0)
    kw = dict(prefill_tokens=0, decode_tokens=64, prefill_context_tokens=0,
              decode_context_tokens=64 * 1000, prefill_attention_pairs=0)
    model = config.model
    expected = 2 * model.num_layers * fit.seconds(64 * model.hidden_size * model.dtype_bytes)
    assert fitted.step_s(**kw) - alone.step_s(**kw) == pytest.approx(expected)
    assert fitted.step_s(**kw) != guessed.step_s(**kw)

    _write(tmp_path / "allreduce_h100.csv", sweep(2, 10e-6, 300e9))
    geometry = KVGeometry(block_size=16, blocks_per_segment=1024, budget_slots=16384)
    executor = CostModelExecutor(config, geometry, results_dir=tmp_path)
    assert executor.details["allreduce_source"] == "allreduce_h100.csv"
    assert executor.model.allreduce_bytes_s == pytest.approx(300e9)
    single = CostModelExecutor(RunConfig(), geometry, results_dir=tmp_path)
    assert "allreduce_source" not in single.details
