"""Sweep report pages: drawn from a sweep directory's results table, goodput against an SLO."""
from __future__ import annotations

import json
import math

import pytest
from matplotlib.backends.backend_pdf import PdfPages

from harness.sweep.grid import Grid, expand
from harness.sweep.runner import LocalExecutor, run_sweep
from reports.schema import SUMMARY_KEYS
from reports.sweep_figures import goodput, is_sweep_dir, load_results, sweep_pages

# p99 TTFT (s) per allocator at rate scales 1, 2, 4: paged fails from 4x, static from 2x, hybrid
# never; segmented fails at 1x already.
TTFT_P99_S = {"static": (1.0, 3.0, 9.0), "paged": (0.5, 1.5, 2.5), "hybrid": (0.2, 0.4, 0.9),
              "segmented": (2.5, 3.0, 4.0)}


def fake_cell(cell) -> dict[str, bytes]:
    block_size = cell.config.allocator.kwargs.get("block_size", 1)
    rate = int(math.log2(cell.trace.rate_scale))
    summary = dict.fromkeys(SUMMARY_KEYS, 0)
    summary.update(utilization_mean=1 - block_size / 256, peak_running=400 // block_size,
                   ttft_p99_s=TTFT_P99_S[cell.config.allocator.name][rate])
    return {"run.json": json.dumps({"summary": summary}).encode()}


@pytest.fixture
def sweep_dir(tmp_path):
    grid = Grid.from_dict({
        "base": {"model": "tiny"},
        "grid": {"allocator": ["static", "paged", "segmented", "hybrid"],
                 "block_size": [8, 16, 64], "rate_scale": [1, 2, 4]},
    })
    run_sweep(grid, expand(grid), tmp_path, LocalExecutor(1), cell_fn=fake_cell, progress=False)
    return tmp_path


def test_goodput_is_the_last_rate_scale_before_the_slo_is_missed(sweep_dir, facts):
    got = goodput(load_results(sweep_dir, facts), 2.0, facts)
    by_series = dict(zip(got["series"], got["goodput_rate_scale"]))
    assert by_series["static"] == 1.0
    assert by_series["paged bs=16"] == 2.0
    assert by_series["hybrid bs=16"] == 4.0
    assert math.isnan(by_series["segmented"])


def test_sweep_pages_are_added_to_a_pdf(sweep_dir, tmp_path):
    assert is_sweep_dir(sweep_dir)
    figures = sweep_pages(sweep_dir, slo_ttft_s=2.0)
    assert len(figures) == 2
    with PdfPages(tmp_path / "sweep.pdf") as pdf:
        for fig in figures:
            pdf.savefig(fig)
    assert (tmp_path / "sweep.pdf").stat().st_size > 10_000
