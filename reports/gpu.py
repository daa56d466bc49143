"""Pages that put measured GPU figures (benchmarks/results/) next to simulated ones: the
block-size ablation (utilization against kernel efficiency), the paged-decode kernel throughput,
and the decode throughput of the GPU executor, each with the device and date of measurement."""
from __future__ import annotations

from typing import Callable

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from reports.load import Run
from reports.measured import kernel_by_block_size
from reports.schema import Measurement
from reports.style import block_size_axis, new_page, note, run_style
from reports.units import count

NO_KERNEL = ("no GPU measurement committed yet\n"
             "(benchmarks/results/ paged_decode_<device>.csv, written by the kernel benchmark)")
NO_DECODE = ("no GPU measurement committed yet\n"
             "(a decode throughput CSV from `kvharness gpu` under benchmarks/results/)")
MAX_TABLE_ROWS = 30
MIN_SPAN_POINTS = 10.0

Labelled = list[tuple[str, Run]]


def block_size_series(groups: dict[str, Labelled]) -> dict[str, list[tuple[int, float]]]:
    """'trace / allocator' -> [(block_size, utilization_mean)] for every allocator run at two or
    more block sizes on one trace."""
    series: dict[str, list[tuple[int, float]]] = {}
    for trace, labelled in groups.items():
        by_allocator: dict[str, dict[int, float]] = {}
        for _, run in labelled:
            if run.block_size is not None and np.isfinite(run.figure("utilization_mean")):
                by_allocator.setdefault(run.allocator, {})[run.block_size] = run.figure(
                    "utilization_mean")
        for allocator, points in by_allocator.items():
            if len(points) >= 2:
                series[f"{trace} / {allocator}"] = sorted(points.items())
    return series


def _kernel_efficiency(kernels: list[Measurement]) -> dict[str, dict[int, float]]:
    """Curve label -> {block_size: median paged/SDPA bandwidth}; the label is the layout, with
    the device and date in front when several measurement files are shown."""
    curves: dict[str, dict[int, float]] = {}
    for measurement in kernels:
        table = kernel_by_block_size(measurement.table)
        prefix = f"{measurement.device} ({measurement.date}), " if len(kernels) > 1 else ""
        for layout, rows in table.groupby("layout"):
            curves[f"{prefix}{layout} layout"] = dict(
                zip(rows["block_size"].astype(int), rows["efficiency"]))
    return curves


def _measured_title(kernels: list[Measurement]) -> str:
    if len(kernels) == 1:
        return f"measured: {kernels[0].device}, {kernels[0].date}"
    return "measured on GPU"


def ablation_page(groups: dict[str, Labelled], kernels: list[Measurement]) -> Figure:
    fig = new_page("Block-size ablation: memory utilization against kernel efficiency",
                   "Small blocks waste less memory (shorter unused tails); large blocks stream "
                   "faster through the decode kernel. Efficiency = paged kernel bandwidth / "
                   "SDPA on a contiguous cache, median over measured shapes.")
    left, middle, right = fig.subplots(1, 3, gridspec_kw={"top": 0.84, "bottom": 0.3,
                                                          "wspace": 0.3})
    series = block_size_series(groups)
    curves = _kernel_efficiency(kernels)
    for index, (name, points) in enumerate(series.items()):
        sizes, utils = zip(*points)
        left.plot(sizes, np.array(utils) * 100, label=name, **run_style(index).line())
    if series:
        _min_span(left, [u * 100 for points in series.values() for _, u in points])
        block_size_axis(left)
        left.set(xlabel="block size (tokens)", ylabel="simulated utilization, mean (%)",
                 title="simulated (cost model)")
        _legend_below(left)
    else:
        note(left, "no block-size sweep among these runs: give run directories of one "
                   "allocator at two or more block sizes", width_chars=26)
    for index, (name, curve) in enumerate(curves.items()):
        sizes = sorted(curve)
        middle.plot(sizes, [curve[s] * 100 for s in sizes], label=name,
                    **run_style(index).line())
    if curves:
        block_size_axis(middle)
        middle.set(xlabel="block size (tokens)", ylabel="kernel efficiency vs SDPA (%)",
                   title=_measured_title(kernels))
        _legend_below(middle)
    else:
        note(middle, NO_KERNEL, width_chars=26)
    _tradeoff(right, series, curves)
    return fig


def _tradeoff(ax, series: dict[str, list[tuple[int, float]]],
              curves: dict[str, dict[int, float]]) -> None:
    if not series or not curves:
        note(ax, "the trade-off needs both a block-size sweep and a kernel measurement",
             width_chars=26)
        return
    curve_name, curve = next(iter(curves.items()))
    drawn = 0
    for index, (name, points) in enumerate(series.items()):
        matched = [(curve[size], util, size) for size, util in points if size in curve]
        if not matched:
            continue
        eff, util, sizes = zip(*matched)
        ax.plot(np.array(eff) * 100, np.array(util) * 100, label=name, **run_style(index).line())
        _min_span(ax, [u * 100 for u in util])
        for e, u, size in matched:
            ax.annotate(f"bs={size}", (e * 100, u * 100), xytext=(4, 4),
                        textcoords="offset points", fontsize=7)
        drawn += 1
    if not drawn:
        note(ax, "no block size appears in both the runs and the kernel measurement",
             width_chars=26)
        return
    ax.set(xlabel="kernel efficiency vs SDPA (%)", ylabel="simulated utilization, mean (%)",
           title="trade-off: up and right is better")
    _legend_below(ax, f"kernel: {curve_name}")


def _min_span(ax, values: list[float], span: float = MIN_SPAN_POINTS) -> None:
    """Keep a y range of at least `span` percentage points, so that a 0.2-point wiggle is not
    drawn as a cliff."""
    low, high = min(values), max(values)
    middle = (low + high) / 2
    half = max(span, high - low) / 2 * 1.1
    bottom = max(0.0, middle - half)
    ax.set_ylim(bottom, min(100.0, bottom + 2 * half))


def _legend_below(ax, title: str = "") -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), title=title or None,
              frameon=False)


def _bar_rows(groups: dict[str, Labelled], key: str) -> list[tuple[str, int, float]]:
    """(trace / label, style index within its trace, figure) for runs with a finite figure;
    the style index keeps each allocator's hatch the same as in its trace section."""
    rows = [(f"{trace} / {label}", index, run.figure(key))
            for trace, labelled in groups.items()
            for index, (label, run) in enumerate(labelled)]
    return [row for row in rows if np.isfinite(row[2])]


def _utilization_bars(ax, groups: dict[str, Labelled]) -> None:
    rows = _bar_rows(groups, "utilization_mean")
    if not rows:
        note(ax, "no simulated run with steps")
        return
    y = np.arange(len(rows))[::-1]
    for (name, index, value), pos in zip(rows, y):
        ax.barh(pos, value * 100, height=0.7, **run_style(index).bar())
        ax.annotate(f"{value * 100:.0f}%", (value * 100, pos), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(y, [name for name, _, _ in rows], fontsize=7.5)
    ax.set(xlabel="utilization, mean (% of backed)", xlim=(0, 110),
           title="simulated utilization (cost model)")


def _unmeasured_page(title: str, subtitle: str, message: str,
                     simulated: Callable[[Axes], None]) -> Figure:
    """The page shown before any GPU measurement is committed: the note beside the simulation."""
    fig = new_page(title, subtitle)
    left, right = fig.subplots(1, 2, gridspec_kw={"top": 0.86, "wspace": 0.45})
    note(left, message)
    simulated(right)
    return fig


def kernel_pages(groups: dict[str, Labelled], kernels: list[Measurement]) -> list[Figure]:
    if not kernels:
        return [_unmeasured_page("Measured paged-decode kernel throughput",
                                 "Kernel bandwidth per block size, measured on a GPU, beside "
                                 "the simulated utilization of each run.",
                                 NO_KERNEL, lambda ax: _utilization_bars(ax, groups))]
    pages = []
    for measurement in kernels:
        fig = new_page(f"Measured paged-decode kernel throughput: {measurement.device}",
                       f"Measured {measurement.date} on {measurement.device} "
                       f"({measurement.path.name}); median over the measured (batch, context) "
                       "shapes, beside the simulated utilization of each run.")
        left, right = fig.subplots(1, 2, gridspec_kw={"top": 0.86, "wspace": 0.45})
        per_size = kernel_by_block_size(measurement.table)
        for index, (layout, rows) in enumerate(per_size.groupby("layout")):
            left.plot(rows["block_size"], rows["bandwidth_gbs"], label=f"paged, {layout}",
                      **run_style(index).line())
        table = measurement.table
        for value, name, style in (
                (table.loc[table["impl"] == "sdpa", "bandwidth_gbs"].median(),
                 "SDPA, contiguous cache", (0, (4, 2))),
                (table["copy_bandwidth_gbs"].median(), "HBM copy bandwidth", (0, (1, 1)))):
            if np.isfinite(value):
                left.axhline(value, color="0.3", linestyle=style, linewidth=1, label=name)
        block_size_axis(left)
        left.set(xlabel="block size (tokens)", ylabel="KV bandwidth (GB/s)",
                 title=f"{measurement.device}, {measurement.date}")
        left.legend(loc="best")
        _utilization_bars(right, groups)
        pages.append(fig)
    return pages


def decode_pages(groups: dict[str, Labelled], others: list[Measurement]) -> list[Figure]:
    if not others:
        return [_unmeasured_page("Measured decode throughput (GPU executor)",
                                 "Tokens per second measured with real kernels, beside the "
                                 "cost model's simulated throughput.",
                                 NO_DECODE, lambda ax: _throughput_bars(ax, groups))]
    pages = []
    for measurement in others:
        fig = new_page(f"Measured on GPU: {measurement.path.name}",
                       f"Measured {measurement.date} on {measurement.device}; first "
                       f"{min(MAX_TABLE_ROWS, len(measurement.table))} of "
                       f"{len(measurement.table)} rows.")
        left, right = fig.subplots(1, 2, gridspec_kw={"top": 0.86, "wspace": 0.3,
                                                      "width_ratios": [2, 1]})
        left.axis("off")
        shown = measurement.table.head(MAX_TABLE_ROWS)
        cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
                 for row in shown.itertuples(index=False)]
        if cells:
            table = left.table(cellText=cells, colLabels=list(shown.columns), loc="upper left")
            table.auto_set_font_size(False)
            table.set_fontsize(7)
        else:
            note(left, f"{measurement.path.name} has a header but no rows")
        _throughput_bars(right, groups)
        pages.append(fig)
    return pages


def _throughput_bars(ax, groups: dict[str, Labelled]) -> None:
    rows = _bar_rows(groups, "throughput_tok_s")
    if not rows:
        note(ax, "no simulated run produced output tokens")
        return
    y = np.arange(len(rows))[::-1]
    for (name, index, value), pos in zip(rows, y):
        ax.barh(pos, value, height=0.7, **run_style(index).bar())
        ax.annotate(count(value), (value, pos), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=8)
    ax.set_yticks(y, [name for name, _, _ in rows], fontsize=7.5)
    ax.margins(x=0.2)
    ax.set(xlabel="output tokens per second", title="simulated throughput (cost model)")
