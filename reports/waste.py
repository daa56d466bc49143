"""The waste breakdown: one stacked bar per allocator splitting its backed KV memory into live
token state and each kind of waste, in the manner of the vLLM paper's memory-waste figure."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from reports.load import Run
from reports.style import WASTE_COMPONENTS, new_page, note
from reports.units import pct

MIN_LABELLED_SHARE = 0.03  # segments thinner than this get no printed percentage

DEFINITIONS = (
    "live: token state stored and referenced\n    (a shared prefix counts once)\n"
    "reserved: allocated for tokens that will be\n    written later\n"
    "internal: allocated and never to be written\n    (block tails, slack past the final length)\n"
    "external: free, but in runs too short for one\n    contiguous request (free x external_"
    "fragmentation;\n    0 where any free unit serves)\n"
    "prefix cache: kept for reuse, no running\n    reference (evictable)\n"
    "stale: held, but behind the sliding window\n    of every sequence holding it (never read\n"
    "    again; let go once its whole unit is)\n"
    "free: backed and usable by the next request\n\n"
    "Shares are time-weighted means over the run\n(step durations as weights)."
)


def waste_page(trace: str, labelled: list[tuple[str, Run]]) -> Figure:
    fig = new_page(f"{trace}: where the backed KV memory goes",
                   "Time-weighted share of backed memory per allocator; the darker the bottom "
                   "segment (live tokens), the more of the memory does useful work.")
    ax = fig.add_axes([0.07, 0.14, 0.6, 0.72])
    fig.text(0.72, 0.55, DEFINITIONS, ha="left", va="top", fontsize=8.5, linespacing=1.4)
    shares = [(label, run.waste_shares()) for label, run in labelled]
    shares = [(label, s) for label, s in shares if np.isfinite(s["live"])]
    if not shares:
        note(ax, "no engine steps recorded: no memory to break down")
        return fig
    x = np.arange(len(shares))
    bottom = np.zeros(len(shares))
    for key, name, grey, hatch in WASTE_COMPONENTS:
        heights = np.array([s[key] for _, s in shares]) * 100
        ax.bar(x, heights, bottom=bottom, width=0.6, facecolor=grey, edgecolor="black",
               hatch=hatch, linewidth=0.6, label=name)
        for i, height in enumerate(heights):
            if height >= MIN_LABELLED_SHARE * 100:
                dark = float(grey) < 0.5
                ax.text(x[i], bottom[i] + height / 2, pct(height / 100),
                        ha="center", va="center", fontsize=8,
                        color="white" if dark else "black",
                        bbox=None if dark else {"facecolor": "white", "edgecolor": "none",
                                                "pad": 0.5, "alpha": 0.8})
        bottom += heights
    ax.set_xticks(x, [label for label, _ in shares], rotation=20, ha="right")
    ax.set_ylabel("share of backed KV memory (%)")
    ax.set_ylim(0, 100)
    handles = [Patch(facecolor=grey, edgecolor="black", hatch=hatch, label=name)
               for _, name, grey, hatch in WASTE_COMPONENTS]
    fig.legend(handles=handles[::-1], loc="upper left", bbox_to_anchor=(0.715, 0.87),
               fontsize=8.5, title="component (top to bottom)", frameon=False)
    return fig
