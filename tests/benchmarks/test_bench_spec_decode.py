"""benchmarks/bench_spec_decode.py end to end on the CPU at the tiny shape (the smoke run of its
docstring): the table it writes has its header, a row per k, equal tokens and the rollback and
floor figures filled in."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]


def test_spec_decode_bench_runs_on_the_cpu(tmp_path, cpu_script_env):
    command = [sys.executable, "benchmarks/bench_spec_decode.py", "--model", "tiny", "--draft",
               "tiny", "--check-model", "tiny", "--requests", "4", "--max-model-len", "128",
               "--spec-tokens", "2,4", "--device", "cpu", "--dtype", "float32", "--out",
               str(tmp_path)]
    subprocess.run(command, cwd=ROOT, env=cpu_script_env, check=True,
                   capture_output=True)
    path = tmp_path / "spec_decode_tiny_cpu.csv"
    lines = path.read_text().splitlines()
    assert [line.split(":")[0] for line in lines[:5]] == [
        "# device", "# torch", "# triton", "# date", "# command"]
    table = pd.read_csv(path, comment="#")
    assert table.spec_tokens.tolist() == [0, 2, 4]
    assert (table.tokens_equal == 4).all() and (table.draft_mismatches == 0).all()
    assert (table.output_tokens == table.output_tokens[0]).all()
    spec = table[table.spec_tokens > 0]
    assert (spec.check_equal == 4).all() and (spec.check_mismatches == 0).all()
    assert (spec.steps < table.steps[0]).all()  # several tokens a step
    for column in ("verify_ms", "plain_ms", "floor_ms", "allocator_truncate_us",
                   "executor_rollback_us", "rollback_share", "draft_s"):
        assert (spec[column] > 0).all(), column
