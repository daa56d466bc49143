"""The fidelity pages: the error table and a page per validated run, read from a folder or the
benchmark's archive of run directories, and an honest page when nothing was measured."""
from __future__ import annotations

import json
import tarfile

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from reports.fidelity import error_table, fidelity_pages, meets_targets
from reports.load import load_run
from reports.schema import (FIDELITY_COLUMNS, REQUESTS_FILE, STEP_BATCH_COLUMNS,
                            STEP_BATCHES_FILE, fidelity_run_name, write_table)
from reports.title import _executor

ROWS = [
    {"slice": "azure-10x", "allocator": "paged", "steps_measured": 40, "steps_simulated": 42,
     "step_err_median": 0.04, "step_err_p90": 0.12, "total_time_err": -0.02,
     "ttft_p50_err": 0.05, "ttft_p99_err": -0.2, "throughput_err": 0.01},
    {"slice": "azure-10x", "allocator": "static", "steps_measured": 40, "steps_simulated": 30,
     "step_err_median": 0.3, "step_err_p90": 0.5, "total_time_err": -0.3,
     "ttft_p50_err": float("nan"), "ttft_p99_err": -0.2, "throughput_err": 0.4},
]


def _write(directory, *, archive: bool) -> None:
    rng = np.random.default_rng(0)
    lines = "# device: NVIDIA H200\n# date: 2026-11-29\n# fitted to: profile_x_h200.csv\n"
    (directory / "fidelity_h200.csv").write_text(
        lines + pd.DataFrame(ROWS, columns=list(FIDELITY_COLUMNS)).to_csv(index=False))
    runs = directory / "fidelity_runs_h200"
    for row in ROWS:
        for measured in (True, False):
            run = runs / fidelity_run_name(row["slice"], row["allocator"], measured)
            run.mkdir(parents=True)
            write_table(pd.DataFrame({"ttft_s": rng.exponential(0.2, 30),
                                      "e2e_s": rng.exponential(3, 30)}), run / REQUESTS_FILE)
            if measured:
                batches = pd.DataFrame(0, index=range(40), columns=list(STEP_BATCH_COLUMNS))
                batches["kind"] = ["decode"] * 30 + ["mixed"] * 10
                batches["decode_tokens"] = rng.integers(1, 64, 40)
                batches["measured_ms"] = rng.uniform(10, 30, 40)
                batches["predicted_ms"] = batches["measured_ms"] * 1.05
                batches.to_csv(run / STEP_BATCHES_FILE, index=False)
    if archive:
        with tarfile.open(directory / "fidelity_runs_h200.tar.gz", "w:gz") as tar:
            for run in sorted(runs.iterdir()):
                for path in sorted(run.iterdir()):
                    tar.add(path, arcname=f"{run.name}/{path.name}")
        for run in runs.iterdir():
            for path in run.iterdir():
                path.unlink()
            run.rmdir()
        runs.rmdir()


@pytest.mark.parametrize("archive", [False, True])
def test_an_error_page_then_a_page_per_run(tmp_path, archive):
    _write(tmp_path, archive=archive)
    pages = fidelity_pages(tmp_path)
    titles = [fig.get_suptitle() for fig in pages]
    assert titles[0].startswith("Simulated against measured")
    assert titles[1:] == ["Fidelity: azure-10x / paged", "Fidelity: azure-10x / static"]
    scatter = pages[1].axes[0]
    assert len(scatter.collections) == 4  # decode and mixed, measured and fitted
    assert len(pages[1].axes[1].lines) == 2  # TTFT: measured and simulated
    for fig in pages:
        plt.close(fig)


def test_the_table_says_which_runs_meet_the_targets():
    assert meets_targets(ROWS[0]) and not meets_targets(ROWS[1])
    table = error_table(pd.DataFrame(ROWS))
    assert "+4.0%" in table and "n/a" in table
    assert table.splitlines()[2].endswith("met") and table.splitlines()[3].endswith("missed")


def test_nothing_measured_is_said_plainly(tmp_path):
    pages = fidelity_pages(tmp_path / "absent")
    assert len(pages) == 1
    texts = [t.get_text() for t in pages[0].texts]
    assert any("Not measured yet" in t for t in texts)
    plt.close(pages[0])


def test_the_title_page_names_the_model_that_priced_a_run(make_run, tmp_path):
    path = make_run(tmp_path / "run")
    meta = json.loads((path / "run.json").read_text())
    meta["executor_details"] = {"cost_model": "fitted:profile_llama3-8b_h200.csv"}
    (path / "run.json").write_text(json.dumps(meta))
    assert _executor(load_run(path)) == "costmodel (priced by fitted:profile_llama3-8b_h200.csv)"
