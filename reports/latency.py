"""Latency distributions per allocator: CDFs of time to first token, time per output token and
end-to-end latency over the requests that reached each point."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from reports.load import Run
from reports.style import PLOT_AREA, marker_every, new_page, note, page_legend, run_style

METRICS = (
    ("ttft_s", "time to first token (s)"),
    ("tpot_s", "time per output token (s)"),
    ("e2e_s", "end-to-end latency (s)"),
)
LOG_SPAN = 20.0  # use a log axis when the largest value is this many times the smallest


def latency_page(trace: str, labelled: list[tuple[str, Run]]) -> Figure:
    fig = new_page(f"{trace}: latency distributions",
                   "Cumulative share of requests (completed or first token produced) at or "
                   "below each latency; n = requests with a value. Further left is better.")
    axes = fig.subplots(1, 3, gridspec_kw={**PLOT_AREA, "wspace": 0.3})
    for ax, (column, xlabel) in zip(axes, METRICS):
        drawn = []
        for index, (label, run) in enumerate(labelled):
            values = run.requests[column].to_numpy(dtype=float)
            values = np.sort(values[np.isfinite(values)])
            if values.size == 0:
                continue
            share = np.arange(1, values.size + 1) / values.size * 100
            ax.step(np.r_[values[0], values], np.r_[0.0, share], where="post",
                    label=f"{label} (n={values.size})",
                    markevery=marker_every(values.size + 1, index, len(labelled), 10),
                    **run_style(index).line())
            drawn.append(values)
        if not drawn:
            note(ax, "no request reached this point\n(empty run, or all rejected)")
            ax.set_title(xlabel)
            continue
        low = min(v[v > 0].min() for v in drawn if (v > 0).any()) if any(
            (v > 0).any() for v in drawn) else 0.0
        high = max(v.max() for v in drawn)
        if low > 0 and high / low > LOG_SPAN:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("requests at or below (%)")
        ax.set_ylim(0, 102)
    page_legend(fig, axes[0], title="run (requests with a TTFT)")
    return fig
