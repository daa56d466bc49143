"""How report pages look: page size, fonts, and a style per run that survives greyscale print
(line style, marker and hatch differ, not colour alone)."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402

PAGE_SIZE_IN = (11.69, 8.27)  # A4 landscape
SUBTITLE_CHARS = 170
# Plot area of a page whose single legend sits in the right margin (see page_legend).
PLOT_AREA = {"left": 0.07, "right": 0.78, "top": 0.86, "bottom": 0.09}
RC = {
    "pdf.fonttype": 42,  # TrueType: text stays text, so readers can search and tests can read it
    "ps.fonttype": 42,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.color": "0.85",
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.4,
    "lines.markersize": 5,
    "hatch.linewidth": 0.6,
}


@dataclass(frozen=True)
class RunStyle:
    color: str
    linestyle: str | tuple
    marker: str
    hatch: str

    def line(self) -> dict:
        return {"color": self.color, "linestyle": self.linestyle, "marker": self.marker}

    def bar(self) -> dict:
        return {"facecolor": self.color, "edgecolor": "black", "hatch": self.hatch,
                "alpha": 0.85}


# Colours of distinct lightness (black, dark blue, orange, light green, ...) so that even the
# colour alone separates in grey; line style and marker separate them again. Their cycles have
# coprime lengths (7 colours, 4 line styles, 7 markers offset), so 28 runs get distinct styles.
_COLORS = ("#000000", "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_HATCHES = ("", "//", "..", "xx", "\\\\", "++", "oo")
# Waste components of the stacked breakdown: (key, label, grey fill, hatch).
WASTE_COMPONENTS = (
    ("live", "live tokens", "0.15", ""),
    ("reserved", "reserved (not yet written)", "0.55", "//"),
    ("internal", "internal (never written)", "0.75", "xx"),
    ("external", "external (free, fragmented)", "0.9", ".."),
    ("cached", "prefix cache (evictable)", "0.65", "\\\\"),
    ("stale", "stale (behind the window)", "0.4", "++"),
    ("free", "free", "1.0", ""),
)


def run_style(index: int) -> RunStyle:
    """The style of the index-th run of a section; the same index gets the same style on every
    page, so a reader follows one allocator through the section."""
    return RunStyle(_COLORS[index % 7], _LINESTYLES[index % 4],
                    _MARKERS[(index + index // 7) % 7], _HATCHES[index % 7])


def marker_every(num_points: int, index: int, num_runs: int, per_line: int = 12) -> tuple:
    """matplotlib markevery for the index-th of num_runs lines: about per_line markers, offset
    per run so that lines lying on top of each other still show every run's markers."""
    step = max(1, num_points // per_line)
    return ((index * step // max(1, num_runs)) % step, step)


def new_page(title: str, subtitle: str = "") -> Figure:
    """A blank A4-landscape figure with the page title at the top (build inside
    `plt.rc_context(RC)` so that its axes get the report's fonts)."""
    fig = plt.figure(figsize=PAGE_SIZE_IN)
    fig.suptitle(title, fontsize=14, fontweight="bold", x=0.04, ha="left", y=0.975)
    if subtitle:
        fig.text(0.04, 0.94, "\n".join(textwrap.wrap(subtitle, SUBTITLE_CHARS)), fontsize=9,
                 color="0.3", ha="left", va="top")
    return fig


def note(ax, text: str, width_chars: int = 40) -> None:
    """Say in the plot area why there is nothing to plot, instead of leaving it blank."""
    lines = [wrapped for line in text.splitlines()
             for wrapped in (textwrap.wrap(line, width_chars, break_long_words=False) or [""])]
    ax.text(0.5, 0.5, "\n".join(lines), transform=ax.transAxes, ha="center", va="center",
            fontsize=10, color="0.25")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def page_legend(fig: Figure, ax, title: str = "") -> None:
    """One legend for the whole page, in the right margin beside PLOT_AREA, instead of one per
    panel covering the data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.795, PLOT_AREA["top"]),
                   title=title or None, frameon=False)


def block_size_axis(ax) -> None:
    """A log2 x axis for block sizes that prints 1, 16, 256, not 2^0, 2^4, 2^8."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(LogLocator(base=2))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_locator(LogLocator(base=2, subs=()))
