"""The fp8 accuracy benchmark runs on a CPU at the tiny shape and writes the table the report
reads (its GPU run is the same code at the llama3.2-1b shape)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from reports.schema import KV_ACCURACY_COLUMNS, read_measurement  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_writes_one_row_per_prompt(tmp_path, cpu_script_env):
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_fp8_accuracy.py"),
                    "--model", "tiny", "--prompts", "5,20", "--steps", "3", "--device", "cpu",
                    "--out", str(tmp_path)], check=True, env=cpu_script_env, cwd=ROOT,
                   capture_output=True)
    measured = read_measurement(tmp_path / "fp8_accuracy_cpu.csv")
    assert tuple(measured.table.columns) == KV_ACCURACY_COLUMNS
    assert measured.table["prompt_tokens"].tolist() == [5, 20]
    assert (measured.table["steps"] == 3).all()
    assert {"device", "torch", "triton", "date", "command"} <= set(measured.header)
