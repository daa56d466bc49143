"""The sharing page of a trace: how much KV a pool of shared blocks saves, over time.

logical counts every sequence's whole KV length, a prefix shared by forks (parallel samples,
beams) or prefix-cache hits once per sequence; live counts each stored token once. Their ratio is
the sharing gain, and 1 - live / logical the memory saved, the figure the vLLM paper gives for
parallel sampling and beam search. The page is made only for traces where some run shares.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.load import Run, time_weights
from reports.style import PLOT_AREA, marker_every, new_page, page_legend, run_style
from reports.timeline import binned

Labelled = list[tuple[str, Run]]


def memory_saved(steps: pd.DataFrame) -> float:
    """1 - live / logical, time-weighted over the steps (each step's KV weighs its duration);
    NaN when no step held KV."""
    weights = time_weights(steps)
    logical = float((steps["logical"].to_numpy(dtype=float) * weights).sum())
    live = float((steps["live"].to_numpy(dtype=float) * weights).sum())
    return 1.0 - live / logical if logical > 0 else float("nan")


def shares(run: Run) -> bool:
    steps = run.steps
    return not steps.empty and bool((steps["live"] < steps["logical"]).any())


def sharing_pages(trace: str, labelled: Labelled) -> list[Figure]:
    """The page, or none when no run of the trace shares any KV."""
    if not any(shares(run) for _, run in labelled):
        return []
    fig = new_page(f"{trace}: KV sharing gain over time",
                   "Sharing gain = logical KV (every sequence's length) / live KV (each stored "
                   "token once); memory saved = 1 - live / logical, time-weighted.")
    top, bottom = fig.subplots(2, 1, gridspec_kw={**PLOT_AREA, "hspace": 0.45})
    drawn = 0
    for index, (label, run) in enumerate(labelled):
        steps = run.steps[run.steps["live"] > 0]
        if steps.empty:
            continue
        gain = steps.assign(gain=steps["logical"] / steps["live"])
        x, y = binned(gain, "gain")
        top.plot(x, y, label=label, markevery=marker_every(len(x), index, len(labelled)),
                 **run_style(index).line())
        drawn += 1
    top.set_xlabel("simulated time (s)")
    top.set_ylabel("logical / live")
    top.set_ylim(bottom=min(1.0, top.get_ylim()[0]))
    if drawn:
        page_legend(fig, top)
    saved = [memory_saved(run.steps) if not run.steps.empty else np.nan for _, run in labelled]
    positions = np.arange(len(labelled))[::-1]
    for index, (pos, value) in enumerate(zip(positions, saved)):
        bottom.barh(pos, np.nan_to_num(value) * 100, height=0.6, **run_style(index).bar())
        bottom.annotate(f"{value:.1%}" if np.isfinite(value) else "n/a",
                        (np.nan_to_num(value) * 100, pos), xytext=(4, 0),
                        textcoords="offset points", va="center", fontsize=8)
    bottom.set_yticks(positions, [label for label, _ in labelled])
    bottom.set_xlabel("memory saved by sharing (% of logical KV, time-weighted)")
    bottom.set_xlim(0, 100)
    return [fig]
