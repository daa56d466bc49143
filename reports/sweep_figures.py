"""Sweep-level report pages, read from a sweep directory's results.csv (schema: reports/schema.py).

- Block size: mean utilization and peak concurrency (peak_running) against block size, one line
  per allocator (and per value of any other grid key that varies); an allocator without a block
  size (static, segmented) is drawn as a flat reference line at its value.
- Arrival rate: p99 TTFT against the arrival-rate scale with the SLO line, and the goodput of each
  allocator: the largest rate scale it sustains with p99 TTFT within the SLO.
- Host tier of the prefix cache (cpu_cache_bytes): reports.host_tier.

Series differ by line style and marker as well as colour, so the pages read in greyscale.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.host_tier import TIER_AXIS, host_tier_pages
from reports.load import NO_FACTS, AllocatorFacts
from reports.schema import RESULTS_CSV, SWEEP_JSON, config_columns
from reports.style import PLOT_AREA, block_size_axis, new_page, note, page_legend, run_style

DEFAULT_SLO_TTFT_S = 2.0


def is_sweep_dir(path: str | Path) -> bool:
    """A directory written by `kvharness sweep` (results.csv beside sweep.json)."""
    path = Path(path)
    return (path / RESULTS_CSV).is_file() and (path / SWEEP_JSON).is_file()


def load_results(sweep_dir: str | Path, facts: AllocatorFacts = NO_FACTS) -> pd.DataFrame:
    """The ok rows of a sweep's results table, allocators in report order."""
    table = pd.read_csv(Path(sweep_dir) / RESULTS_CSV)
    table = table[table["status"] == "ok"].copy()
    table["_rank"] = table["allocator"].map(facts.rank)
    return table.sort_values(["_rank", "cell"], kind="stable").drop(columns="_rank")


def sweep_pages(sweep_dir: str | Path, *, slo_ttft_s: float = DEFAULT_SLO_TTFT_S,
                facts: AllocatorFacts = NO_FACTS) -> list[Figure]:
    """The sweep's pages as figures: block-size, rate-scale and host-tier views where the grid
    varies them."""
    table = load_results(sweep_dir, facts)
    name = Path(sweep_dir).name
    pages = []
    if _varies(table, "block_size"):
        pages.append(block_size_page(table, name, facts))
    if _varies(table, "rate_scale"):
        pages.append(rate_page(table, name, slo_ttft_s, facts))
    if _varies(table, TIER_AXIS):
        pages += host_tier_pages(table, sweep_dir, name, facts)
    if not pages:
        fig = new_page(f"Sweep {name}")
        ax = fig.add_axes([0.1, 0.1, 0.8, 0.75])
        note(ax, f"{len(table)} ok cells; the grid varies neither block_size, rate_scale nor "
                 f"{TIER_AXIS}, so there is no sweep view to draw (see {RESULTS_CSV}).")
        pages.append(fig)
    return pages


def block_size_page(table: pd.DataFrame, name: str, facts: AllocatorFacts = NO_FACTS) -> Figure:
    fig = new_page(
        f"Sweep {name}: utilization and concurrency against block size",
        "Mean utilization (live / backed slots, time-weighted) and the most requests running at "
        "once, per allocator. Allocators without a block size are flat reference lines.",
    )
    left = fig.add_axes(_panel(0))
    right = fig.add_axes(_panel(1))
    for ax, key, label in ((left, "utilization_mean", "mean utilization"),
                           (right, "peak_running", "peak running requests")):
        _draw_against(ax, table, "block_size", key, facts)
        block_size_axis(ax)
        ax.set_xlabel("block size (tokens)")
        ax.set_ylabel(label)
    left.set_ylim(0, 1.02)
    page_legend(fig, left)
    return fig


def rate_page(table: pd.DataFrame, name: str, slo_ttft_s: float,
              facts: AllocatorFacts = NO_FACTS) -> Figure:
    fig = new_page(
        f"Sweep {name}: p99 TTFT against arrival rate (SLO {slo_ttft_s:g} s)",
        "Arrival times divided by the rate scale. Goodput: the largest rate scale at which a "
        "series keeps p99 TTFT within the SLO (and every smaller scale does too).",
    )
    left = fig.add_axes(_panel(0))
    right = fig.add_axes(_panel(1))
    _draw_against(left, table, "rate_scale", "ttft_p99_s", facts)
    left.axhline(slo_ttft_s, color="0.4", linestyle=(0, (6, 3)), linewidth=1.0,
                 label=f"SLO {slo_ttft_s:g} s")
    left.set_yscale("log")
    block_size_axis(left)  # a log2 axis with plain tick labels suits doubling rates as well
    left.set_xlabel("arrival-rate scale")
    left.set_ylabel("TTFT p99 (s)")
    _goodput_bars(right, goodput(table, slo_ttft_s, facts))
    page_legend(fig, left)
    return fig


def goodput(table: pd.DataFrame, slo_ttft_s: float,
            facts: AllocatorFacts = NO_FACTS) -> pd.DataFrame:
    """Per series (every varying config column but rate_scale): the largest rate scale whose p99
    TTFT, and that of every smaller scale, is within the SLO; NaN where even the smallest fails."""
    rows = []
    for label, group in _series(table, "rate_scale", facts):
        group = group.sort_values("rate_scale")
        ok = (group["ttft_p99_s"] <= slo_ttft_s).to_numpy()  # NaN (nothing completed) fails
        passing = np.logical_and.accumulate(ok)
        best = group["rate_scale"].to_numpy()[passing].max() if passing.any() else math.nan
        rows.append({"series": label, "goodput_rate_scale": best,
                     "max_rate_scale": group["rate_scale"].max()})
    return pd.DataFrame(rows, columns=["series", "goodput_rate_scale", "max_rate_scale"])


def _draw_against(ax, table: pd.DataFrame, x: str, y: str, facts: AllocatorFacts) -> None:
    """One line per series of y against x; a series with no x value is a flat line."""
    xs = table[x].dropna()
    span = (xs.min(), xs.max()) if len(xs) else (1, 1)
    for index, (label, group) in enumerate(_series(table, x, facts)):
        style = run_style(index).line()
        points = group.dropna(subset=[x]).sort_values(x)
        if len(points):
            ax.plot(points[x], points[y], label=label, **style)
        else:
            ax.plot(span, [group[y].mean()] * 2, label=label, **{**style, "marker": None})
    if not len(table):
        note(ax, "no ok cells")


def _series(table: pd.DataFrame, x: str, facts: AllocatorFacts):
    """(label, rows) per combination of the config columns that vary, apart from x."""
    keys = [c for c in config_columns(table.columns) if c != x and _varies(table, c)]
    if "allocator" not in keys:
        keys.insert(0, "allocator")
    if not len(table):
        return []
    grouped = table.groupby(keys, dropna=False, sort=False)
    return [(_label(dict(zip(keys, values)), facts), group) for values, group in grouped]


def _label(values: dict, facts: AllocatorFacts) -> str:
    parts = [str(values.pop("allocator"))]
    for key, value in values.items():
        if isinstance(value, float) and math.isnan(value):
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        parts.append(f"{facts.label(key)}={value}")
    return " ".join(parts)


def _goodput_bars(ax, table: pd.DataFrame) -> None:
    if table.empty:
        note(ax, "no ok cells")
        return
    positions = np.arange(len(table))[::-1]
    for index, (pos, row) in enumerate(zip(positions, table.itertuples())):
        value = row.goodput_rate_scale
        ax.barh(pos, 0 if math.isnan(value) else value, **run_style(index).bar())
        text = "misses the SLO at every scale" if math.isnan(value) else f"{value:g}x"
        if not math.isnan(value) and value == row.max_rate_scale:
            text += " (meets it at every scale run)"
        ax.text(0 if math.isnan(value) else value, pos, f"  {text}", va="center", fontsize=8)
    ax.set_yticks(positions, table["series"])
    ax.set_xlabel("goodput: largest arrival-rate scale within the SLO")
    ax.set_xlim(0, max(table["max_rate_scale"].max(), 1e-9) * 1.35)
    ax.grid(axis="y", visible=False)
    ax.set_axisbelow(True)


def _varies(table: pd.DataFrame, column: str) -> bool:
    return column in table.columns and table[column].dropna().nunique() > 1


def _panel(index: int) -> list[float]:
    """Two side-by-side panels inside the page's plot area (legend in the right margin)."""
    left, right = PLOT_AREA["left"], PLOT_AREA["right"]
    bottom, top = PLOT_AREA["bottom"], PLOT_AREA["top"] - 0.04
    gap = 0.13  # room for the goodput panel's series labels
    width = (right - left - gap) / 2
    return [left + index * (width + gap), bottom, width, top - bottom]
