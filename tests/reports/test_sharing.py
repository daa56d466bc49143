"""The sharing page: memory saved as 1 - live / logical, time-weighted; a page only where some
run shares KV."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from reports.load import Run
from reports.sharing import memory_saved, sharing_pages


def _run(live, logical, step_ms) -> Run:
    steps = pd.DataFrame({"time_s": [0.0, 1.0, 2.0][: len(live)], "step_ms": step_ms,
                          "live": live, "logical": logical})
    return Run(Path("run"), steps, pd.DataFrame(), {})


def test_memory_saved_weighs_each_step_by_its_duration():
    steps = _run([50, 100], [100, 100], [3.0, 1.0]).steps
    assert memory_saved(steps) == pytest.approx(1 - (50 * 3 + 100) / (100 * 3 + 100))
    assert memory_saved(_run([0], [0], [1.0]).steps) != memory_saved(steps)  # NaN


def test_a_page_only_where_a_run_shares():
    plain = _run([10, 20], [10, 20], [1.0, 1.0])
    assert sharing_pages("t", [("paged", plain)]) == []
    pages = sharing_pages("t", [("paged", plain), ("beams", _run([10, 20], [30, 60], [1.0, 1.0]))])
    assert len(pages) == 1 and "sharing" in pages[0].get_suptitle()
    plt.close(pages[0])
