"""The summary table of a trace: one column per allocator, one row per figure of the run
summary, the best value of each comparable row (and any tied with it) in bold."""
from __future__ import annotations

from typing import Callable

import numpy as np
from matplotlib.figure import Figure

from reports.load import Run
from reports.style import new_page, note
from reports.units import count, pct, seconds
from reports.verdict import TIE_RELATIVE

# (row label, summary key, formatter, which is better: "max" | "min" | None)
ROWS: tuple[tuple[str, str, Callable[[float], str], str | None], ...] = (
    ("requests", "requests", count, None),
    ("completed", "completed", count, "max"),
    ("rejected", "rejected", count, "min"),
    ("queued / running at end", "", count, None),
    ("utilization, mean", "utilization_mean", pct, "max"),
    ("utilization, p50", "utilization_p50", pct, "max"),
    ("utilization, p99", "utilization_p99", pct, "max"),
    ("waste: reserved", "waste_reserved", pct, "min"),
    ("waste: internal", "waste_internal", pct, "min"),
    ("waste: external", "waste_external", pct, "min"),
    ("waste: prefix cache", "waste_cached", pct, None),
    ("waste: stale (behind the window)", "waste_stale", pct, "min"),
    ("running, mean", "mean_running", lambda v: count(v, 1), "max"),
    ("running, peak", "peak_running", count, "max"),
    ("peak backed memory (GiB)", "peak_backed_bytes", lambda v: count(v / 2**30, 1), None),
    ("throughput (output tok/s)", "throughput_tok_s", count, "max"),
    ("output tokens", "output_tokens", count, None),
    ("prefix-cache hit tokens", "prefix_hit_tokens", count, None),
    ("TTFT p50", "ttft_p50_s", seconds, "min"),
    ("TTFT p99", "ttft_p99_s", seconds, "min"),
    ("TPOT p50", "tpot_p50_s", seconds, "min"),
    ("TPOT p99", "tpot_p99_s", seconds, "min"),
    ("E2E p50", "e2e_p50_s", seconds, "min"),
    ("E2E p99", "e2e_p99_s", seconds, "min"),
    ("preemptions", "preemptions", count, "min"),
    ("simulated time", "sim_time_s", seconds, None),
    ("mean step (ms)", "mean_step_ms", lambda v: count(v, 2), None),
)


def _row(run: Run, key: str) -> float:
    if key:
        return run.figure(key)
    return run.figure("queued_at_end") + run.figure("running_at_end")


def _best_cells(values: np.ndarray, better: str | None) -> list[bool]:
    """Which cells of a row are best or within the verdict's tie tolerance of it; none when
    every run ties (there is no winner to point at)."""
    finite = np.isfinite(values)
    if not better or finite.sum() < 2:
        return [False] * len(values)
    best = (np.nanmax if better == "max" else np.nanmin)(values)
    close = finite & (np.abs(values - best) <= abs(best) * TIE_RELATIVE)
    return [False] * len(values) if close.sum() == finite.sum() else close.tolist()


def summary_page(trace: str, labelled: list[tuple[str, Run]]) -> Figure:
    fig = new_page(f"{trace}: summary table",
                   "Figures from each run's summary (run.json); the best value of a row, and any "
                   "within 1% of it, is in bold (none when all tie). Percentages are "
                   "time-weighted shares of backed memory.")
    ax = fig.add_axes([0.04, 0.04, 0.92, 0.86])
    ax.axis("off")
    if not labelled:
        note(ax, "no runs for this trace")
        return fig
    cells, bold = [], []
    for name, key, fmt, better in ROWS:
        values = np.array([_row(run, key) for _, run in labelled])
        cells.append([name, *[fmt(v) for v in values]])
        bold.append([False, *_best_cells(values, better)])
    first = 0.2
    widths = [first, *[(1 - first) / len(labelled)] * len(labelled)]
    headers = ["", *[label.replace(" ", "\n") for label, _ in labelled]]
    table = ax.table(cellText=cells, colLabels=headers,
                     colWidths=widths, loc="upper center", cellLoc="right", colLoc="right")
    table.auto_set_font_size(False)
    table.set_fontsize(8.5)
    table.scale(1.0, 1.22)
    for (row, col), cell in table.get_celld().items():
        cell.set_edgecolor("0.7")
        if row == 0:
            cell.set_text_props(fontweight="bold")
            cell.set_facecolor("0.9")
            cell.set_height(cell.get_height() * 2)
        elif col == 0:
            cell.set_text_props(ha="left")
            cell.get_text().set_horizontalalignment("left")
        elif bold[row - 1][col]:
            cell.set_text_props(fontweight="bold")
    return fig
