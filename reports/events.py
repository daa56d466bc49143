"""Per-trace pages of what happened when: external fragmentation over time; admissions,
rejections and preemptions over time; and throughput against utilization, window by window."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.load import Run
from reports.style import PLOT_AREA, marker_every, new_page, note, page_legend, run_style
from reports.timeline import NO_STEPS, binned

Labelled = list[tuple[str, Run]]
WINDOWS = 40  # time windows of the throughput-utilization scatter


def _external_share(steps: pd.DataFrame) -> pd.DataFrame:
    """Steps with the free-but-fragmented slots as a share of backed memory."""
    backed = steps["backed"].to_numpy(dtype=float)
    external = (steps["free"] - steps["largest_free_run"]).to_numpy(dtype=float)
    out = steps[["time_s", "step_ms"]].copy()
    out["external_share"] = np.where(backed > 0, external / np.maximum(backed, 1), 0.0)
    out["external_fragmentation"] = steps["external_fragmentation"]
    return out


def _external_frame(run: Run) -> pd.DataFrame:
    return _external_share(run.steps)


def _lines(ax, labelled: Labelled, frame_of, column: str, scale: float = 1.0) -> int:
    drawn = 0
    for index, (label, run) in enumerate(labelled):
        if run.steps.empty:
            continue
        x, y = binned(frame_of(run), column)
        ax.plot(x, y * scale, label=label, markevery=marker_every(len(x), index, len(labelled)),
                **run_style(index).line())
        drawn += 1
    return drawn


def fragmentation_page(trace: str, labelled: Labelled) -> Figure:
    fig = new_page(f"{trace}: external fragmentation over time",
                   "Top: external fragmentation = 1 - largest free run / free (only an allocator "
                   "that needs contiguity has any). Bottom: the free-but-fragmented slots as a "
                   "share of backed memory, the part of it a request could not use.")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={**PLOT_AREA, "hspace": 0.12})
    drawn = _lines(top, labelled, _external_frame, "external_fragmentation", 100.0)
    if not drawn:
        note(top, NO_STEPS)
        return fig
    _lines(bottom, labelled, _external_frame, "external_share", 100.0)
    top.set(ylabel="external fragmentation (%)", ylim=(0, 105))
    bottom.set(ylabel="fragmented free (% of backed)", xlabel="simulated time (s)")
    bottom.set_ylim(0, max(1.0, bottom.get_ylim()[1]))
    page_legend(fig, top)
    return fig


def _cumulative(ax, times: np.ndarray, label: str, index: int, num: int) -> None:
    times = np.sort(times[np.isfinite(times)])
    x = np.concatenate([[0.0], times])
    y = np.arange(len(x))
    ax.step(x, y, where="post", label=label, markevery=marker_every(len(x), index, num),
            **run_style(index).line())


def admission_page(trace: str, labelled: Labelled) -> Figure:
    fig = new_page(f"{trace}: admissions, rejections and preemptions over time",
                   "Cumulative counts. Admitted: first admission of each request. Rejected: at "
                   "the request's arrival time (a request that can never fit is rejected when "
                   "it arrives or reaches the head of an empty engine). Preempted: sequences "
                   "evicted to let others grow, at the step that needed the room.")
    axes = fig.subplots(1, 3, gridspec_kw={**PLOT_AREA, "wspace": 0.35})
    num = len(labelled)
    for index, (label, run) in enumerate(labelled):
        requests = run.requests
        _cumulative(axes[0], requests["admit_s"].to_numpy(dtype=float), label, index, num)
        rejected = requests.loc[requests["status"] == "rejected", "arrival_s"]
        _cumulative(axes[1], rejected.to_numpy(dtype=float), label, index, num)
        if not run.steps.empty:
            steps = run.steps
            axes[2].step(steps["time_s"], steps["preempted"].cumsum(), where="post",
                         label=label, **{**run_style(index).line(), "marker": None})
    for ax, what in zip(axes, ("admitted requests", "rejected requests", "preemptions")):
        ax.set(xlabel="simulated time (s)", ylabel=f"{what} (cumulative)")
        ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
    page_legend(fig, axes[0])
    return fig


def _windows(steps: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(utilization %, generated tokens/s) per equal time window with steps in it."""
    time_s = steps["time_s"].to_numpy(dtype=float)
    step_s = steps["step_ms"].to_numpy(dtype=float) / 1e3
    edges = np.linspace(time_s[0], time_s[-1] + step_s[-1], WINDOWS + 1)
    index = np.clip(np.searchsorted(edges, time_s, side="right") - 1, 0, WINDOWS - 1)
    busy = np.bincount(index, weights=step_s, minlength=WINDOWS)
    tokens = np.bincount(index, weights=steps["decode_tokens"].to_numpy(dtype=float),
                         minlength=WINDOWS)
    util = np.bincount(index, weights=step_s * steps["utilization"].to_numpy(dtype=float),
                       minlength=WINDOWS)
    keep = busy > 0
    width = np.diff(edges)[keep]
    return util[keep] / busy[keep] * 100, tokens[keep] / width


def throughput_page(trace: str, labelled: Labelled) -> Figure:
    fig = new_page(f"{trace}: throughput against utilization",
                   f"Each point is one of {WINDOWS} equal time windows of a run: the decode "
                   "tokens generated per second in it against its mean KV utilization "
                   "(live / backed). Up and right: memory turned into output.")
    ax = fig.subplots(1, 1, gridspec_kw=PLOT_AREA)
    drawn = 0
    for index, (label, run) in enumerate(labelled):
        if len(run.steps) < 2:
            continue
        util, rate = _windows(run.steps)
        style = run_style(index)
        ax.plot(util, rate, linestyle="none", marker=style.marker, color=style.color,
                markerfacecolor="none", label=label)
        drawn += 1
    if not drawn:
        note(ax, NO_STEPS)
        return fig
    ax.set(xlabel="KV utilization, window mean (% of backed)",
           ylabel="generated tokens per second", xlim=(0, 100))
    ax.set_ylim(0, ax.get_ylim()[1])
    page_legend(fig, ax)
    return fig
