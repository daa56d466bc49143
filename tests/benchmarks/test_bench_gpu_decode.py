"""The Azure GPU benchmark end to end on the CPU (the tiny shape, a few requests): its summary and
step-bin tables, and no GPU-only line in them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from reports.schema import read_measurement  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_a_cpu_run_writes_a_row_per_allocator_and_its_step_bins(tmp_path, cpu_script_env):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu_decode.py"),
                    "--device", "cpu", "--model", "tiny", "--dtype", "float32", "--requests", "6",
                    "--allocators", "paged,segmented", "--baseline-requests", "0",
                    "--out", str(tmp_path)],
                   check=True, env=cpu_script_env, cwd=ROOT)
    summary = read_measurement(tmp_path / "gpu_decode_cpu.csv").table
    assert list(summary.allocator) == ["paged", "segmented"]
    assert (summary.completed == summary.requests).all() and (summary.requests == 6).all()
    steps = read_measurement(tmp_path / "gpu_steps_cpu.csv")
    assert set(steps.table.allocator) == {"paged", "segmented"}
    assert (steps.table.floor_ms > 0).all() and (steps.table.steps > 0).all()
    assert not any("eager host time" in key for key in steps.header)
