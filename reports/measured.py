"""Measured GPU figures committed under benchmarks/results/: CSV files that start with
`# key: value` comment lines (device, torch, triton, date) and then a CSV table.

The paged-decode kernel benchmark has fixed columns (KERNEL_COLUMNS), its fp8 run the same and
kv_dtype; the fp8 accuracy table has KV_ACCURACY_COLUMNS. Any other results file (the decode
throughput of the GPU executor) is shown as it is, with its device and date.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from reports.schema import KV_ACCURACY_COLUMNS, KV_DTYPE_KEY, Measurement, read_measurement

KERNEL_COLUMNS = ("batch", "context", "block_size", "layout", "impl", "median_us", "kv_bytes",
                  "bandwidth_gbs", "copy_bandwidth_gbs", "max_abs_err")


def is_kernel(measurement: Measurement) -> bool:
    """Whether the table is the paged-decode kernel benchmark's (against SDPA, one dtype)."""
    return (all(column in measurement.table.columns for column in KERNEL_COLUMNS)
            and KV_DTYPE_KEY not in measurement.table.columns)


def is_kv_dtype_kernel(measurement: Measurement) -> bool:
    """Whether the table is the kernel over an fp8 cache beside bf16's (a kv_dtype column)."""
    return (all(column in measurement.table.columns for column in KERNEL_COLUMNS)
            and KV_DTYPE_KEY in measurement.table.columns)


def is_kv_accuracy(measurement: Measurement) -> bool:
    """Whether the table is the fp8 KV accuracy benchmark's."""
    return all(column in measurement.table.columns for column in KV_ACCURACY_COLUMNS)


def find_measurements(results_dir: str | Path) -> tuple[list[Measurement], list[Measurement]]:
    """(kernel benchmark files, other GPU measurement files) under results_dir, sorted by name;
    both empty when the directory does not exist (nothing measured yet)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return [], []
    measurements = [read_measurement(path) for path in sorted(results_dir.glob("*.csv"))]
    kernels = [m for m in measurements if is_kernel(m)]
    others = [m for m in measurements if not is_kernel(m)]
    return kernels, others


def kernel_by_block_size(table: pd.DataFrame) -> pd.DataFrame:
    """Per block size and layout of the paged kernel: median bandwidth (GB/s) over the measured
    (batch, context) shapes, and the median efficiency against SDPA on a contiguous cache at the
    same shape (the non-paged ceiling). Columns: block_size, layout, bandwidth_gbs, efficiency,
    shapes."""
    paged = table[table["impl"] == "paged"]
    sdpa = (table[table["impl"] == "sdpa"]
            .groupby(["batch", "context"], as_index=False)["bandwidth_gbs"].median()
            .rename(columns={"bandwidth_gbs": "sdpa_gbs"}))
    merged = paged.merge(sdpa, on=["batch", "context"], how="left")
    merged["efficiency"] = merged["bandwidth_gbs"] / merged["sdpa_gbs"]
    grouped = merged.groupby(["block_size", "layout"], as_index=False).agg(
        bandwidth_gbs=("bandwidth_gbs", "median"),
        efficiency=("efficiency", "median"),
        shapes=("bandwidth_gbs", "size"),
    )
    return grouped.sort_values(["layout", "block_size"]).reset_index(drop=True)
