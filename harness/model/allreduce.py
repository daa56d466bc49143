"""The tensor-parallel all-reduce term, fitted from a measured sweep of message sizes.

benchmarks/bench_gpu_tp.py times NCCL all-reduces of hidden x tokens activations on a GPU
family for each tensor-parallel width and writes `allreduce_<gpu>.csv` (ALLREDUCE_COLUMNS).
One all-reduce of a message of b bytes is modelled as latency_s + b / bytes_s, fitted per width
by least squares on relative error: small messages (decode steps) are latency-bound and large
ones (prefill chunks) bandwidth-bound, and a fit on absolute error would let the largest
messages decide both constants. bytes_s is then an effective bandwidth for the message bytes,
whatever algorithm (ring, tree) NCCL chose.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reports.schema import read_measurement
from reports.schema import results_dir as measured_results_dir

ALLREDUCE_GLOB = "allreduce_*.csv"
ALLREDUCE_COLUMNS = ("tp", "tokens", "hidden", "dtype_bytes", "message_bytes", "latency_us",
                     "bus_gbs", "mode")


class AllReduceFitError(ValueError):
    """The sweep table cannot give a fit for this width (too few sizes, or no bandwidth term)."""


@dataclass(frozen=True)
class AllReduceFit:
    """One all-reduce of b bytes takes latency_s + b / bytes_s on tp ranks."""

    tp: int
    latency_s: float
    bytes_s: float
    points: int
    max_relative_error: float  # worst |fit / measured - 1| over the sweep's sizes
    source: str | None = None

    def seconds(self, message_bytes):
        return self.latency_s + message_bytes / self.bytes_s


def fit_allreduce(table: pd.DataFrame, tp: int, *, source: str | None = None) -> AllReduceFit:
    """Least squares of latency + bytes / bandwidth on the sweep rows of width tp, each row
    weighted by 1 / its time (relative error). A negative intercept (noise at tiny sizes) is
    refitted as bandwidth alone."""
    rows = table[table["tp"] == tp]
    if rows["message_bytes"].nunique() < 2:
        raise AllReduceFitError(f"tp {tp}: {len(rows)} sweep rows; the fit needs two or more "
                                "message sizes")
    size = rows["message_bytes"].to_numpy(dtype=float)
    seconds = rows["latency_us"].to_numpy(dtype=float) * 1e-6
    latency, per_byte = _weighted_lstsq(size, seconds, intercept=True)
    if latency < 0:
        latency, per_byte = 0.0, _weighted_lstsq(size, seconds, intercept=False)[1]
    if per_byte <= 0:
        raise AllReduceFitError(f"tp {tp}: all-reduce time does not grow with message size")
    fitted = latency + size * per_byte
    return AllReduceFit(tp, float(latency), float(1.0 / per_byte), len(rows),
                        float(np.max(np.abs(fitted / seconds - 1.0))), source)


def _weighted_lstsq(size: np.ndarray, seconds: np.ndarray, *, intercept: bool):
    """(a, b) minimising sum(((a + b * size) / seconds - 1) ** 2); a = 0 without intercept."""
    columns = [np.ones_like(size), size] if intercept else [size]
    design = np.stack(columns, axis=1) / seconds[:, None]
    solution = np.linalg.lstsq(design, np.ones_like(size), rcond=None)[0]
    return (solution[0], solution[1]) if intercept else (0.0, solution[0])


def measured_allreduce(gpu_name: str, tp: int, *,
                       results_dir: Path | None = None) -> AllReduceFit | None:
    """The fit for tp ranks of this GPU family from its measured sweep, or None without one
    (no file, or no rows of this width): the cost model then keeps its datasheet guess."""
    if tp < 2:
        return None
    family = gpu_name.split("-")[0].lower()
    where = Path(results_dir) if results_dir is not None else measured_results_dir()
    for path in sorted(where.glob(ALLREDUCE_GLOB)):
        if family not in path.name.lower():
            continue
        table = read_measurement(path).table
        if (table["tp"] == tp).any():
            return fit_allreduce(table, tp, source=path.name)
    return None
