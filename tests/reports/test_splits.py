"""The v1-against-v2 page: table per (batch, context) and a page from the committed file."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from reports.measured import read_measurement
from reports.splits import is_splits, splits_page, splits_table

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def test_splits_table_ratios_and_speedup():
    table = pd.DataFrame({
        "batch": [1] * 3, "context": [512] * 3, "impl": ["sdpa", "paged_v1", "paged_v2"],
        "num_splits": [0, 1, 4], "median_us": [10.0, 20.0, 5.0], "ratio_to_sdpa": [1.0, 0.5, 2.0],
    })
    out = splits_table(table)
    assert out.loc[0, ["v1_ratio", "v2_ratio", "v2_splits", "v2_over_v1"]].tolist() == \
        [0.5, 2.0, 4, 4.0]


def test_page_from_the_committed_h200_file():
    measurement = read_measurement(RESULTS / "decode_splits_h200.csv")
    assert is_splits(measurement)
    fig = splits_page(measurement)
    assert len(fig.axes) == 2
