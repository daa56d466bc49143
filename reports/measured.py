"""Measured GPU figures committed under benchmarks/results/: CSV files that start with
`# key: value` comment lines (device, torch, triton, date) and then a CSV table.

The paged-decode kernel benchmark has fixed columns (KERNEL_COLUMNS); any other results file
(the decode throughput of the GPU executor) is shown as it is, with its device and date.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

KERNEL_COLUMNS = ("batch", "context", "block_size", "layout", "impl", "median_us", "kv_bytes",
                  "bandwidth_gbs", "copy_bandwidth_gbs", "max_abs_err")


class MeasurementError(ValueError):
    """A results CSV that cannot be read (bad header comment or CSV body)."""


@dataclass(frozen=True)
class Measurement:
    path: Path
    header: dict[str, str]  # from the `# key: value` lines
    table: pd.DataFrame

    @property
    def device(self) -> str:
        return self.header.get("device", "unknown device")

    @property
    def date(self) -> str:
        return self.header.get("date", "unknown date")

    @property
    def is_kernel(self) -> bool:
        return all(column in self.table.columns for column in KERNEL_COLUMNS)


def read_measurement(path: str | Path) -> Measurement:
    path = Path(path)
    header: dict[str, str] = {}
    lines = path.read_text().splitlines()
    body_start = 0
    for number, line in enumerate(lines, start=1):
        if not line.startswith("#"):
            break
        key, sep, value = line[1:].partition(":")
        if not sep:
            raise MeasurementError(f"{path}:{number}: header comment {line!r} is not "
                                   "`# key: value`")
        header[key.strip()] = value.strip()
        body_start = number
    if body_start == len(lines):
        raise MeasurementError(f"{path}: no CSV table after the header comments")
    try:
        table = pd.read_csv(path, skiprows=body_start)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise MeasurementError(f"{path}: {exc}") from exc
    return Measurement(path=path, header=header, table=table)


def find_measurements(results_dir: str | Path) -> tuple[list[Measurement], list[Measurement]]:
    """(kernel benchmark files, other GPU measurement files) under results_dir, sorted by name;
    both empty when the directory does not exist (nothing measured yet)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return [], []
    measurements = [read_measurement(path) for path in sorted(results_dir.glob("*.csv"))]
    kernels = [m for m in measurements if m.is_kernel]
    others = [m for m in measurements if not m.is_kernel]
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
