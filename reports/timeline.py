"""Per-trace pages over simulated time: utilization and backed memory, running and waiting
sequences, and the admitted concurrency each allocator reached."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.load import Run, time_weights
from reports.style import PLOT_AREA, marker_every, new_page, note, page_legend, run_style
from reports.units import count

MAX_POINTS = 800  # per line; a step table can hold 10^5 rows, a printed line needs far fewer

Labelled = list[tuple[str, Run]]


def binned(steps: pd.DataFrame, column: str, max_points: int = MAX_POINTS
           ) -> tuple[np.ndarray, np.ndarray]:
    """(time_s, value) with at most max_points points: the time-weighted mean of each of
    max_points equal slices of the run's time span."""
    time_s = steps["time_s"].to_numpy(dtype=float)
    values = steps[column].to_numpy(dtype=float)
    if len(steps) <= max_points:
        return time_s, values
    edges = np.linspace(time_s[0], time_s[-1], max_points + 1)
    index = np.clip(np.searchsorted(edges, time_s, side="right") - 1, 0, max_points - 1)
    weights = time_weights(steps)
    total = np.bincount(index, weights=weights, minlength=max_points)
    summed = np.bincount(index, weights=weights * values, minlength=max_points)
    keep = total > 0
    centers = (edges[:-1] + edges[1:]) / 2
    return centers[keep], summed[keep] / total[keep]


def _plot_lines(ax, labelled: Labelled, column: str, scale: float = 1.0) -> int:
    """One line per run; returns how many runs had steps to draw."""
    drawn = 0
    for index, (label, run) in enumerate(labelled):
        if run.steps.empty:
            continue
        x, y = binned(run.steps, column)
        ax.plot(x, y * scale, label=label, markevery=marker_every(len(x), index, len(labelled)),
                **run_style(index).line())
        drawn += 1
    return drawn


def _finish(ax, drawn: int, ylabel: str, empty_text: str) -> None:
    if not drawn:
        note(ax, empty_text)
        return
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(ylabel)


NO_STEPS = "no engine steps recorded: no request was admitted in any run of this trace"


def utilization_page(trace: str, labelled: Labelled) -> Figure:
    fig = new_page(f"{trace}: KV memory utilization over time",
                   "Utilization = live token state / backed memory; backed memory grows on "
                   "demand for segment-backed allocators and is the whole pool for the others.")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={**PLOT_AREA, "hspace": 0.12})
    drawn = _plot_lines(top, labelled, "utilization", scale=100.0)
    _finish(top, drawn, "utilization (% of backed)", NO_STEPS)
    if drawn:
        top.set_ylim(0, 105)
        top.set_xlabel("")
        page_legend(fig, top)
    per_token = next((run.figure("bytes_per_token") for _, run in labelled), float("nan"))
    scale = per_token / 2**30 if np.isfinite(per_token) else 1.0
    unit = "GiB" if np.isfinite(per_token) else "slots"
    drawn = _plot_lines(bottom, labelled, "backed", scale=scale)
    _finish(bottom, drawn, f"backed KV memory ({unit})", NO_STEPS)
    if drawn:
        budget = max(run.steps["budget"].max() for _, run in labelled if not run.steps.empty)
        bottom.axhline(budget * scale, color="0.4", linewidth=0.8, linestyle=(0, (2, 2)))
        bottom.annotate("budget", (0.995, budget * scale), xycoords=("axes fraction", "data"),
                        ha="right", va="bottom", fontsize=8, color="0.3")
        bottom.set_ylim(0, budget * scale * 1.1)
    return fig


def queue_page(trace: str, labelled: Labelled) -> Figure:
    fig = new_page(f"{trace}: running and waiting sequences over time",
                   "Running = admitted and holding KV memory; waiting = arrived, queued for "
                   "memory or batch room (time-weighted means over equal time slices).")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={**PLOT_AREA, "hspace": 0.12})
    drawn = _plot_lines(top, labelled, "running")
    _finish(top, drawn, "running sequences", NO_STEPS)
    if drawn:
        top.set_xlabel("")
        page_legend(fig, top)
    drawn = _plot_lines(bottom, labelled, "waiting")
    _finish(bottom, drawn, "waiting requests", NO_STEPS)
    if drawn:  # counts: start at zero, and keep a visible range when the queue stayed empty
        for ax in (top, bottom):
            ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
    return fig


def concurrency_page(trace: str, labelled: Labelled) -> Figure:
    fig = new_page(f"{trace}: admitted concurrency",
                   "Left: share of simulated time with at least N sequences running. Right: "
                   "time-weighted mean running sequences (bar) and the peak (tick), with "
                   "rejected requests.")
    left, right = fig.subplots(1, 2, gridspec_kw={**PLOT_AREA, "wspace": 0.45})
    drawn = 0
    for index, (label, run) in enumerate(labelled):
        if run.steps.empty:
            continue
        running = run.steps["running"].to_numpy(dtype=np.int64)
        weights = time_weights(run.steps)
        time_at = np.bincount(running, weights=weights, minlength=running.max() + 2)
        share = np.cumsum(time_at[::-1])[::-1] / weights.sum()  # time with >= N running
        levels = np.arange(len(share))
        left.step(levels, share * 100, where="post", label=label,
                  markevery=marker_every(len(levels), index, len(labelled)),
                  **run_style(index).line())
        drawn += 1
    _finish(left, drawn, "time with >= N running (%)", NO_STEPS)
    if drawn:
        left.set_xlabel("running sequences N")
        page_legend(fig, left)
    _concurrency_bars(right, labelled)
    return fig


def _concurrency_bars(ax, labelled: Labelled) -> None:
    if not any(np.isfinite(run.figure("mean_running")) for _, run in labelled):
        note(ax, NO_STEPS)
        return
    y = np.arange(len(labelled))[::-1]
    for index, ((label, run), pos) in enumerate(zip(labelled, y)):
        mean, peak = run.figure("mean_running"), run.figure("peak_running")
        ax.barh(pos, np.nan_to_num(mean), height=0.6, **run_style(index).bar())
        ax.plot([np.nan_to_num(peak)] * 2, [pos - 0.4, pos + 0.4], color="black", linewidth=2)
        ax.annotate(f"mean {count(mean, 1)}, peak {count(peak)}, "
                    f"{count(run.figure('rejected'))} rejected",
                    (np.nan_to_num(peak), pos), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=8)
    ax.set_yticks(y, [label for label, _ in labelled])
    ax.set_xlabel("running sequences")
    peaks = [run.figure("peak_running") for _, run in labelled]
    ax.set_xlim(0, 2.2 * max([p for p in peaks if np.isfinite(p)] + [1.0]))  # room for text
