"""The host-tier pages of a sweep over cpu_cache_bytes: per-tier shares (a run without a tier read
from its requests), and a takeaway that says what the numbers say."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from harness.sweep.grid import Grid, expand
from harness.sweep.runner import LocalExecutor, run_sweep
from reports.host_tier import takeaway, tier_rows
from reports.schema import HOST_TIER_SUMMARY_KEYS, REQUESTS_FILE, SUMMARY_KEYS, write_table
from reports.sweep_figures import load_results, sweep_pages

GIB = 1 << 30
# Per allocator and tier size (GiB): GPU and host shares of admitted prompt tokens, TTFT p50 (s).
# The run without a tier finds 30 of its 100 admitted prompt tokens on the GPU.
CELLS = {
    ("paged", 0): (0.3, 0.0, 2.0), ("paged", 1): (0.3, 0.05, 2.5), ("paged", 4): (0.3, 0.3, 1.5),
    ("segmented", 0): (0.3, 0.0, 2.0), ("segmented", 1): (0.3, 0.04, 2.4),
    ("segmented", 4): (0.3, 0.25, 1.6),
}


def fake_cell(cell) -> dict[str, bytes]:
    size = cell.config.cpu_cache_bytes // GIB
    gpu, host, p50 = CELLS[cell.config.allocator.name, size]
    summary = dict.fromkeys(SUMMARY_KEYS, 0)
    summary.update(ttft_p50_s=p50, ttft_p99_s=4 * p50, prefix_hit_tokens=30)
    files = {}
    if size:
        summary.update(zip(HOST_TIER_SUMMARY_KEYS, (
            0, 0, 0, gpu, host, 1 - gpu - host, size * 5e9, host * 1e10)))
    else:  # the third request was never admitted: its prompt does not count
        requests = pd.DataFrame({"prompt_tokens": [40, 60, 500], "admit_s": [0.0, 1.0, None]})
        buffer = io.BytesIO()
        write_table(requests, buffer)
        files[REQUESTS_FILE] = buffer.getvalue()
    files["run.json"] = json.dumps({"summary": summary}).encode()
    return files


@pytest.fixture
def sweep_dir(tmp_path):
    grid = Grid.from_dict({
        "base": {"model": "tiny"},
        "grid": {"allocator": ["paged", "segmented"],
                 "cpu_cache_bytes": [0, GIB, 4 * GIB]},
    })
    out = tmp_path / "sweep"
    run_sweep(grid, expand(grid), out, LocalExecutor(1), cell_fn=fake_cell, progress=False)
    return out


def test_rows_read_a_run_without_a_tier_from_its_requests(sweep_dir, facts):
    rows = tier_rows(load_results(sweep_dir, facts), sweep_dir)
    off = rows[(rows.allocator == "paged") & (rows.tier_gib == 0)].iloc[0]
    assert (off.gpu, off.host, off.offload_gb) == (0.3, 0.0, 0.0)
    assert (rows["gpu"] + rows["host"] + rows["miss"]).round(12).eq(1).all()
    top = rows[(rows.allocator == "paged") & (rows.tier_gib == 4)].iloc[0]
    assert (top.host, top.offload_gb, top.restore_gb) == (0.3, 20.0, 3.0)


def test_the_takeaway_says_what_pays_and_what_does_not(sweep_dir, facts):
    rows = tier_rows(load_results(sweep_dir, facts), sweep_dir)
    text = takeaway(rows)
    assert text.startswith("paged: without a host tier the GPU prefix cache finds 30.0%")
    assert "A 4 GiB host tier finds another 30.0% (60.0% in all)" in text
    assert "TTFT p50 goes from 2 s to 1.5 s (p99 8 s to 6 s)" in text
    assert "20 GB to the host for 3 GB brought back" in text
    assert "At 1 GiB its hits (5.0%) do not pay for that traffic: TTFT p50 2.5 s." in text
    assert "The smallest tier that lowers TTFT p50 is 4 GiB." in text
    assert "within 5.0 points" in text
    better = rows.assign(ttft_p50_s=rows["ttft_p50_s"].where(rows.tier_gib != 1, 1.9))
    assert "The smallest tier that lowers TTFT p50 is 1 GiB." in takeaway(better)
    assert "No tier size lowers TTFT p50." in takeaway(rows.assign(ttft_p50_s=3.0))
    assert takeaway(rows[rows.tier_gib == 0]).startswith("No run had a host tier")


def test_a_sweep_over_the_tier_gets_its_pages(sweep_dir, facts):
    titles = [fig.get_suptitle() for fig in sweep_pages(sweep_dir, facts=facts)]
    assert titles == ["Sweep sweep: the prefix cache's host tier",
                      "Sweep sweep: the prefix cache's host tier, in numbers"]
