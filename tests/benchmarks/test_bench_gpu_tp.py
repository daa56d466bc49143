"""The tensor-parallel benchmark end to end on the CPU (gloo, two ranks, the tiny shape): the
all-reduce sweep, the decode row, and the runs it packs, whose summaries give the row's errors."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("torch")

from reports.schema import read_measurement  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def bench(out: Path, env: dict[str, str], *extra: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu_tp.py"), "--device", "cpu",
                    "--tp", "2", "--models", "tiny", "--dtype", "float32", "--requests", "6",
                    "--budget-slots", "4096", "--out", str(out), *extra],
                   check=True, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def out(tmp_path_factory, cpu_script_env):
    out = tmp_path_factory.mktemp("tp")
    bench(out, cpu_script_env)
    return out


def test_the_sweep_times_every_size_at_the_width(out):
    sweep = read_measurement(out / "allreduce_cpu.csv").table
    assert set(sweep.tp) == {2} and len(sweep) == len(set(sweep.tokens)) == 14
    assert (sweep.latency_us > 0).all()


def test_the_decode_row_matches_the_runs_it_packs(out):
    row = read_measurement(out / "gpu_decode_tp2_cpu.csv").table.iloc[0]
    assert (row.model, row.tp, row.requests, row.completed) == ("tiny", 2, 6, 6)
    with tarfile.open(out / "runs-tp2-tiny.tar.gz") as tar:
        names = set(tar.getnames())
        summary = {run: json.load(tar.extractfile(f"{run}/run.json"))["summary"]
                   for run in ("gpu-tp2", "sim")}
        step_log = pd.read_csv(tar.extractfile("gpu-tp2/step_log.csv"))
    assert {"gpu-tp2/steps.parquet", "sim/steps.parquet"} <= names
    assert len(step_log) == row.steps
    measured, simulated = summary["gpu-tp2"], summary["sim"]
    for column, key in (("total_time_err", "sim_time_s"), ("ttft_p50_err", "ttft_p50_s"),
                        ("throughput_err", "throughput_tok_s")):
        assert row[column] == pytest.approx(simulated[key] / measured[key] - 1, rel=1e-5)
    assert pd.isna(row.priced_ratio_profile)  # no profile at this width: the roofline priced


def test_a_profile_at_the_width_prices_the_simulation_and_the_steps(tmp_path, cpu_script_env):
    profiles = tmp_path / "profiles"
    subprocess.run([sys.executable, "-m", "harness.cli", "profile", "--model", "tiny", "--tp",
                    "2", "--quick", "--repeats", "1", "--dtype", "float32", "--device", "cpu",
                    "--block-sizes", "16", "--gpu-name", "h100", "--out", str(profiles)],
                   check=True, env=cpu_script_env, cwd=ROOT)
    bench(tmp_path, cpu_script_env, "--profile-dir", str(profiles))
    row = read_measurement(tmp_path / "gpu_decode_tp2_cpu.csv").table.iloc[0]
    assert row.priced_ratio_profile > 0
    with tarfile.open(tmp_path / "runs-tp2-tiny.tar.gz") as tar:
        details = json.load(tar.extractfile("sim/run.json"))["executor_details"]
    assert details["cost_model"] == "fitted:profile_tiny_h100_tp2.csv"


def test_a_sweep_whose_times_do_not_grow_gives_no_fit_and_the_run_goes_on(capsys):
    """A CPU smoke run's gloo timings may shrink with the message size: the benchmark then
    prices with the guessed term alone (its fit columns NaN) instead of stopping."""
    import importlib.util

    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_gpu_tp",
                                                  ROOT / "benchmarks" / "bench_gpu_tp.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shrinking = pd.DataFrame({"tp": 2, "message_bytes": [1e3, 1e4, 1e5],
                              "latency_us": [30.0, 20.0, 10.0]})
    assert module.sweep_fit(shrinking, 2) is None
    assert "does not grow" in capsys.readouterr().out
    growing = shrinking.assign(latency_us=[10.0, 20.0, 110.0])
    assert module.sweep_fit(growing, 2).bytes_s > 0
