"""Measured GPU results files: header comments, kernel classification, per-block-size figures."""
from __future__ import annotations

from pathlib import Path

import pytest

from reports.measured import find_measurements, is_kernel, kernel_by_block_size
from reports.schema import MeasurementError, read_measurement


def test_header_and_table(kernel_csv):
    measurement = read_measurement(kernel_csv)
    assert measurement.device == "NVIDIA H100 80GB HBM3"
    assert measurement.date == "2025-01-15"
    assert measurement.header["triton"] == "3.1.0"
    assert is_kernel(measurement)
    assert len(measurement.table) == 2 * (1 + 6 * 2)


def test_efficiency_is_paged_over_sdpa(kernel_csv):
    table = kernel_by_block_size(read_measurement(kernel_csv).table)
    contiguous = table[table["layout"] == "contiguous"].set_index("block_size")
    assert contiguous.loc[1, "efficiency"] == pytest.approx(0.5)
    assert contiguous.loc[64, "efficiency"] == pytest.approx(1 - 0.5 / 8, abs=1e-4)
    assert (contiguous["shapes"] == 2).all()


def test_other_results_files_are_not_kernels(kernel_csv):
    tmp_path = kernel_csv.parent
    (tmp_path / "decode_h100.csv").write_text("# device: H100\n# date: 2025-02-01\n"
                                              "allocator,tok_s\npaged,1234.5\n")
    kernels, others = find_measurements(tmp_path)
    assert [m.path.name for m in kernels] == ["paged_decode_h100.csv"]
    assert [m.path.name for m in others] == ["decode_h100.csv"]
    assert others[0].device == "H100"


def test_missing_results_dir_means_nothing_measured(tmp_path):
    assert find_measurements(tmp_path / "absent") == ([], [])


def test_bad_header_and_headers_only_raise(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("# no colon here\na,b\n1,2\n")
    with pytest.raises(MeasurementError, match="bad.csv:1"):
        read_measurement(bad)
    bare = tmp_path / "bare.csv"
    bare.write_text("# device: x\n")
    with pytest.raises(MeasurementError, match="no CSV table"):
        read_measurement(bare)


def test_committed_results_all_read():
    """Every measured file the report and the cost model read parses, with device and date."""
    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    kernels, others = find_measurements(results)
    assert kernels and others
    for measurement in kernels + others:
        assert measurement.device != "unknown device" and measurement.date != "unknown date"


def test_every_committed_table_reads_with_where_and_when_it_was_measured():
    """The main job reads every table in the results folder: one it cannot parse stops it."""
    from reports.schema import results_dir

    paths = sorted(results_dir().glob("*.csv")) + sorted(results_dir().glob("tuning/*.csv"))
    assert paths
    for path in paths:
        header = read_measurement(path).header
        assert {"device", "date"} <= set(header), path.name
