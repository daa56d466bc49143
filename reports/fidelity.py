"""Pages that say how far the simulator predicts the GPU: the error table of
benchmarks/bench_fidelity.py, then one page per validated run (slice and allocator) with the
step times the fitted model gives each measured step against the measured ones, and the
request TTFT and end-to-end latency distributions of the simulated and the measured run.

It reads fidelity_<gpu>.csv and the run directories beside it: a folder fidelity_runs_<gpu>/
or the archive fidelity_runs_<gpu>.tar.gz the benchmark writes. Without them it says so.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.schema import (FIDELITY_COLUMNS, REQUESTS_FILE, STEP_BATCHES_FILE,
                            fidelity_run_name, read_measurement)
from reports.style import new_page, note, run_style
from reports.textpage import bullet, heading, mono, para, text_pages

# The targets for |simulated / measured - 1|.
TARGETS = {"step_err_median": 0.10, "total_time_err": 0.05, "ttft_p50_err": 0.10,
           "throughput_err": 0.05}
KINDS = ("decode", "prefill", "mixed", "memory")
NOT_MEASURED = (
    "Not measured yet. On a GPU, `python benchmarks/bench_fidelity.py --out DIR` profiles the "
    "GPU executor, fits the cost model, replays each slice per allocator measured and "
    "simulated, and writes fidelity_<gpu>.csv and fidelity_runs_<gpu>.tar.gz; commit both (and "
    "the profile) under benchmarks/results/ and these pages show them.")


class RunFiles:
    """The tables of the validation's run directories, from a folder or the benchmark's
    archive (read in place)."""

    def __init__(self, directory: Path, gpu: str) -> None:
        self.folder = directory / f"fidelity_runs_{gpu}"
        self.archive = directory / f"fidelity_runs_{gpu}.tar.gz"

    def table(self, run: str, name: str) -> pd.DataFrame | None:
        if (self.folder / run / name).is_file():
            return _read(self.folder / run / name, name)
        if not self.archive.is_file():
            return None
        with tarfile.open(self.archive) as tar:
            try:
                member = tar.extractfile(f"{run}/{name}")
            except KeyError:
                return None
            return _read(io.BytesIO(member.read()), name) if member else None


def _read(source, name: str) -> pd.DataFrame:
    """A run table (Parquet) or the benchmark's own step_batches.csv."""
    return pd.read_parquet(source) if name.endswith(".parquet") else pd.read_csv(source)


def fidelity_pages(directory: str | Path) -> list[Figure]:
    """The error table and a page per validated run of every fidelity_<gpu>.csv in directory;
    one page saying nothing is measured yet when there is none."""
    directory = Path(directory)
    paths = sorted(directory.glob("fidelity_*.csv")) if directory.is_dir() else []
    if not paths:
        return text_pages("Simulated against measured: fidelity of the cost model",
                          [para(NOT_MEASURED)])
    pages: list[Figure] = []
    for path in paths:
        measurement = read_measurement(path)
        files = RunFiles(directory, path.stem.removeprefix("fidelity_"))
        pages += error_pages(measurement)
        for row in measurement.table.to_dict("records"):
            pages.append(run_page(row, files, measurement.device))
    return pages


def meets_targets(row: dict) -> bool:
    return all(np.isfinite(row[k]) and abs(row[k]) <= limit for k, limit in TARGETS.items())


def error_table(table: pd.DataFrame) -> str:
    """Monospaced rows of the fidelity table, errors in percent, with the targets' verdict."""
    rows = [("slice", "allocator", "steps m/s", "step med", "step p90", "total", "TTFT p50",
             "TTFT p99", "tput", "targets")]
    for r in table.to_dict("records"):
        rows.append((str(r["slice"]), str(r["allocator"]),
                     f"{r['steps_measured']}/{r['steps_simulated']}",
                     *[_percent(r[k]) for k in FIDELITY_COLUMNS[4:]],
                     "met" if meets_targets(r) else "missed"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _percent(value: float) -> str:
    return f"{value * 100:+.1f}%" if np.isfinite(value) else "n/a"


def error_pages(measurement) -> list[Figure]:
    h = measurement.header
    blocks = [
        para(f"Measured {measurement.date} on {measurement.device}; {h.get('model', '')}. "
             f"Fitted to {h.get('fitted to', 'a profile')}."),
        para("Errors are simulated / measured - 1. Step errors are |error| quantiles over the "
             "measured steps, each step's own batch priced by the fitted model; the others "
             "compare the simulated run of the slice with the measured one. Targets: "
             + ", ".join(f"{k} within {v:.0%}" for k, v in TARGETS.items()) + "."),
        heading("Errors per slice and allocator"), mono(error_table(measurement.table)),
        heading("How it was made"), bullet(f"Slices: {h.get('slices', 'n/a')}"),
        bullet(f"Command: {h.get('command', 'n/a')}"),
    ]
    return text_pages("Simulated against measured: fidelity of the fitted cost model", blocks)


def run_page(row: dict, files: RunFiles, device: str) -> Figure:
    slice_name, allocator = row["slice"], row["allocator"]
    fig = new_page(f"Fidelity: {slice_name} / {allocator}",
                   f"On {device}: measured run against the fitted model. Step error median "
                   f"{_percent(row['step_err_median'])} (|error|), total time "
                   f"{_percent(row['total_time_err'])}, TTFT p50 {_percent(row['ttft_p50_err'])}"
                   f", throughput {_percent(row['throughput_err'])}; "
                   f"{'meets' if meets_targets(row) else 'misses'} the targets.")
    steps_ax, ttft_ax, e2e_ax = fig.subplots(1, 3, gridspec_kw={"top": 0.84, "bottom": 0.12,
                                                                 "wspace": 0.3})
    gpu_run = fidelity_run_name(slice_name, allocator, True)
    sim_run = fidelity_run_name(slice_name, allocator, False)
    _step_scatter(steps_ax, files.table(gpu_run, STEP_BATCHES_FILE))
    measured, simulated = files.table(gpu_run, REQUESTS_FILE), files.table(sim_run, REQUESTS_FILE)
    for ax, column, label in ((ttft_ax, "ttft_s", "TTFT"), (e2e_ax, "e2e_s", "end-to-end")):
        _cdfs(ax, measured, simulated, column, label)
    return fig


def _step_scatter(ax, batches: pd.DataFrame | None) -> None:
    if batches is None or batches.empty:
        note(ax, f"no {STEP_BATCHES_FILE} for this run")
        return
    tokens = batches.prefill_tokens + batches.decode_tokens
    for index, kind in enumerate(k for k in KINDS if (batches.kind == k).any()):
        rows = batches.kind == kind
        color = run_style(index).color
        ax.scatter(tokens[rows], batches.measured_ms[rows], s=6, color=color, alpha=0.5,
                   label=f"{kind}, measured")
        ax.scatter(tokens[rows], batches.predicted_ms[rows], s=10, color=color, marker="x",
                   linewidths=0.6, label=f"{kind}, fitted model")
    ax.set_xscale("symlog", linthresh=1)
    ax.set(xlabel="batch tokens (prefill + decode)", ylabel="step time (ms)",
           title="each measured step and its price")
    ax.legend(fontsize=7, loc="upper left")


def _cdfs(ax, measured: pd.DataFrame | None, simulated: pd.DataFrame | None, column: str,
          label: str) -> None:
    drawn = False
    for index, (name, frame) in enumerate((("measured", measured), ("simulated", simulated))):
        values = np.sort(frame[column].dropna().to_numpy()) if frame is not None else []
        if len(values):
            ax.plot(values, np.arange(1, len(values) + 1) / len(values), label=name,
                    markevery=max(1, len(values) // 12), **run_style(index).line())
            drawn = True
    if not drawn:
        note(ax, f"no {REQUESTS_FILE} for these runs")
        return
    ax.set(xlabel=f"{label} (s)", ylabel="fraction of requests", title=f"{label} CDF")
    ax.legend(fontsize=8, loc="lower right")
