"""The fidelity benchmark's parts that need no GPU: a slice replayed through the recording
wrapper (around the GPU executor, here on the CPU at the tiny shape) and simulated with the
fitted model, its run directories, and the error row computed from them."""
from __future__ import annotations

import importlib.util
import sys
import tarfile
from argparse import Namespace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    import os

    os.environ.setdefault("TRITON_INTERPRET", "1")

from harness.gpu.executor import build_decoder  # noqa: E402
from harness.model.config import AllocatorConfig, RunConfig, SchedulerConfig  # noqa: E402
from harness.model.fitted import (FittedCostModel, fitted_cost_model, price_rows,
                                  profile_path)  # noqa: E402
from harness.model.presets import model_preset  # noqa: E402
from reports.schema import (FIDELITY_COLUMNS, STEP_BATCH_COLUMNS, read_measurement,  # noqa: E402
                            write_table)
from workloads.trace import make_trace  # noqa: E402

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_fidelity.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_fidelity", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_fidelity"] = module
    spec.loader.exec_module(module)
    return module


MODEL = FittedCostModel(
    overhead_s=1e-3, eager_overhead_s=5e-4, token_s=1e-6, knots=(16,), knot_slopes_s=(1e-6,),
    decode_kv_token_s=1e-8, mixed_decode_kv_token_s=2e-8, prefill_kv_token_s=1e-8,
    prefill_pair_s=1e-10)


def _profile(config, where: Path) -> None:
    rows = pd.DataFrame({"kind": ["decode"] * 4 + ["prefill"] * 4, "block_size": 4,
                         "batch": [1, 2, 4, 8, 1, 1, 1, 1],
                         "prefill_tokens": [0, 0, 0, 0, 8, 16, 32, 64],
                         "decode_tokens": [1, 2, 4, 8, 0, 0, 0, 0],
                         "decode_context_tokens": [10, 40, 80, 300, 0, 0, 0, 0],
                         "prefill_context_tokens": [0, 0, 0, 0, 8, 40, 32, 100],
                         "prefill_attention_pairs": [0, 0, 0, 0, 36, 520, 528, 4256]})
    rows["kv_bytes_read"] = 0
    rows["measured_ms"] = price_rows(MODEL, rows) * 1e3
    path = profile_path(config.model.name, config.gpu.name, where)
    path.write_text("# device: test\n" + rows.to_csv(index=False))


def test_a_slice_measured_and_simulated_gives_a_fidelity_row(bench, tmp_path):
    config = RunConfig(model=model_preset("tiny"), allocator=AllocatorConfig.of(
        "paged", block_size=4), scheduler=SchedulerConfig(max_num_seqs=4,
                                                          max_num_batched_tokens=32),
        budget_slots_override=400)
    _profile(config, tmp_path)
    rng = np.random.default_rng(5)
    trace = make_trace(arrival_s=np.sort(rng.uniform(0, 0.01, 6)),
                       prompt_tokens=rng.integers(3, 40, 6), output_tokens=rng.integers(2, 8, 6),
                       n=np.ones(6, np.int64), prefix_hashes=None, failed=np.zeros(6, bool),
                       attrs={"name": "small", "source": "test", "format": "synthetic"})
    decoder = build_decoder(config.model, device="cpu", dtype="float32")
    measured, simulated, batches = bench.measured_and_simulated(
        Namespace(profile_dir=tmp_path), config, trace, decoder)
    assert simulated.info["executor_details"]["cost_model"].startswith("fitted:profile_tiny")
    assert measured.info["executor"] == "gpu"
    assert list(batches.columns) == list(STEP_BATCH_COLUMNS)
    assert len(batches) == len(measured.steps)
    assert (batches.prefill_tokens.to_numpy() == measured.steps.prefill_tokens.to_numpy()).all()
    assert set(batches.kind) <= {"decode", "prefill", "mixed"}
    assert np.allclose(batches.measured_ms, measured.steps.step_ms)
    fitted = fitted_cost_model(config, 4, results_dir=tmp_path)
    assert np.allclose(batches.predicted_ms, price_rows(fitted, batches) * 1e3)

    runs = tmp_path / "runs"
    dirs = bench.write_runs(runs, measured, simulated, batches, "small-1x", "paged")
    row = bench.fidelity_row("small-1x", "paged", *dirs)
    assert list(row) == list(FIDELITY_COLUMNS)
    assert row["steps_measured"] == len(measured.steps)
    assert row["steps_simulated"] == len(simulated.steps)
    expected = simulated.summary["sim_time_s"] / measured.summary["sim_time_s"] - 1
    assert row["total_time_err"] == pytest.approx(expected)
    err = np.abs(batches.predicted_ms / batches.measured_ms - 1)
    assert row["step_err_median"] == pytest.approx(float(np.median(err)))

    bench.write_table(tmp_path / "fidelity_cpu.csv", ["# device: cpu"], [row])
    table = read_measurement(tmp_path / "fidelity_cpu.csv").table
    assert list(table.columns) == list(FIDELITY_COLUMNS)
    bench.pack(runs, tmp_path / "fidelity_runs_cpu.tar.gz")
    with tarfile.open(tmp_path / "fidelity_runs_cpu.tar.gz") as tar:
        names = set(tar.getnames())
    assert "small-1x-paged-gpu/step_batches.csv" in names
    assert "small-1x-paged-sim/requests.parquet" in names


def test_errors_of_equal_runs_are_zero(bench, tmp_path):
    import json

    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        write_table(pd.DataFrame({"step": [0, 1]}), d / "steps.parquet")
        (d / "run.json").write_text(json.dumps({"summary": {
            "sim_time_s": 2.0, "ttft_p50_s": 0.1, "ttft_p99_s": 0.5, "throughput_tok_s": 10.0}}))
    pd.DataFrame({"measured_ms": [2.0, 4.0], "predicted_ms": [2.2, 3.0]}).to_csv(
        tmp_path / "a" / "step_batches.csv", index=False)
    row = bench.fidelity_row("s", "paged", tmp_path / "a", tmp_path / "b")
    assert row["total_time_err"] == row["ttft_p50_err"] == row["throughput_err"] == 0.0
    assert row["step_err_median"] == pytest.approx(0.175)
