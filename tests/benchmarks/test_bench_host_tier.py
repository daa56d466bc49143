"""The host-tier benchmark runs end to end on a CPU at the tiny shape (a smoke run: its copies
round trip, and its table has a row per size, direction and layout with a floor beside it)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from reports.schema import read_measurement  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_a_cpu_smoke_run_writes_every_row_with_its_floor(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as running the script puts it first
    spec = importlib.util.spec_from_file_location("bench_host_tier",
                                                  BENCHMARKS / "bench_host_tier.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_host_tier", bench)
    spec.loader.exec_module(bench)
    argv = ["--device", "cpu", "--model", "tiny", "--tokens", "16,32", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    table = read_measurement(tmp_path / "host_tier_cpu.csv")
    assert table.header["command"].endswith(" ".join(argv))
    rows = table.table
    assert list(rows.columns) == list(bench.COLUMNS)
    # Block sizes 16 and 1, two sizes each, two directions, two host layouts.
    assert len(rows) == 2 * 2 * 2 * 2
    assert set(rows["direction"]) == {"restore", "offload"}
    assert (rows["tokens"] == rows["blocks"] * rows["block_size"]).all()
    assert np.isfinite(rows["ratio_to_floor"]).all() and (rows["floor_ms"] > 0).all()
