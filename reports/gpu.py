"""Pages that put measured GPU figures (benchmarks/results/) next to simulated ones: the
block-size ablation (utilization against kernel efficiency), the paged-decode kernel throughput,
and the decode throughput of the GPU executor, each with the device and date of measurement."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from reports.load import Run
from reports.measured import kernel_by_block_size
from reports.measured_pages import measured_pages
from reports.schema import Measurement
from reports.style import block_size_axis, new_page, note, run_style
from reports.units import count

NO_KERNEL = ("no GPU measurement committed yet\n"
             "(benchmarks/results/ paged_decode_<device>.csv, written by the kernel benchmark)")
NO_DECODE = ("no GPU measurement committed yet\n"
             "(a decode throughput CSV from `kvharness gpu` under benchmarks/results/)")

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


def _spread(values) -> str:
    values = [v * 100 for v in values]
    return f"{min(values):.0f}-{max(values):.0f}%" if values else "n/a"


def _ablation_subtitle(series: dict[str, list[tuple[int, float]]],
                       curves: dict[str, dict[int, float]]) -> str:
    """What the data shows, in numbers, at the block sizes both sides have."""
    sizes = sorted({size for points in series.values() for size, _ in points})
    measured = sorted({size for curve in curves.values() for size in curve})
    both = [size for size in sizes if size in measured]
    text = ("Simulated: each run's time-weighted mean utilization (live / backed) at one load. "
            "Measured: paged kernel bandwidth / SDPA on a contiguous cache, median over the "
            "measured shapes. Axes start at zero. ")
    if both:
        sim = [u for points in series.values() for size, u in points if size in both]
        eff = [curve[size] for curve in curves.values() for size in both if size in curve]
        text += (f"At block sizes {', '.join(map(str, both))}: simulated utilization spans "
                 f"{_spread(sim)}, measured kernel efficiency {_spread(eff)}.")
    return text


def ablation_page(groups: dict[str, Labelled], kernels: list[Measurement]) -> Figure:
    series = block_size_series(groups)
    curves = _kernel_efficiency(kernels)
    fig = new_page("Block-size ablation: simulated utilization and measured kernel efficiency",
                   _ablation_subtitle(series, curves))
    left, middle, right = fig.subplots(1, 3, gridspec_kw={"top": 0.82, "bottom": 0.3,
                                                          "wspace": 0.3})
    for index, (name, points) in enumerate(series.items()):
        sizes, utils = zip(*points)
        left.plot(sizes, np.array(utils) * 100, label=name, **run_style(index).line())
    if series:
        block_size_axis(left)
        left.set(xlabel="block size (tokens)", ylabel="simulated utilization, mean (%)",
                 title="simulated (cost model)", ylim=(0, 105))
        _legend_below(left)
    else:
        note(left, "no block-size sweep among these runs: give run directories of one "
                   "allocator at two or more block sizes", width_chars=26)
    _measured_panel(middle, curves, kernels,
                    sorted({size for points in series.values() for size, _ in points}))
    if series and curves:
        middle.set_xlim(left.get_xlim())
    _tradeoff(right, series, curves)
    return fig


def _measured_panel(ax, curves: dict[str, dict[int, float]], kernels: list[Measurement],
                    sizes: list[int]) -> None:
    """Kernel efficiency at the simulated block sizes (all measured ones when none match)."""
    if not curves:
        note(ax, NO_KERNEL, width_chars=26)
        return
    for index, (name, curve) in enumerate(curves.items()):
        shown = sorted(size for size in curve if size in sizes) or sorted(curve)
        ax.plot(shown, [curve[size] * 100 for size in shown], label=name,
                **run_style(index).line())
    block_size_axis(ax)
    top = max(v for curve in curves.values() for v in curve.values()) * 100
    ax.set(xlabel="block size (tokens)", ylabel="kernel efficiency vs SDPA (%)",
           title=_measured_title(kernels), ylim=(0, max(105.0, top * 1.1)))
    ax.axhline(100, color="0.5", linewidth=0.8, linestyle=(0, (2, 2)))
    _legend_below(ax)


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
        for e, u, size in matched:
            ax.annotate(f"bs={size}", (e * 100, u * 100), xytext=(4, 4),
                        textcoords="offset points", fontsize=7)
        drawn += 1
    if not drawn:
        note(ax, "no block size appears in both the runs and the kernel measurement",
             width_chars=26)
        return
    top = max(curve.values()) * 100
    ax.set(xlabel="kernel efficiency vs SDPA (%)", ylabel="simulated utilization, mean (%)",
           title="trade-off: up and right is better", xlim=(0, max(105.0, top * 1.1)),
           ylim=(0, 105))
    _legend_below(ax, f"kernel: {curve_name}")


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
                       "shapes. Right: the same medians, and the efficiency against SDPA on a "
                       "contiguous cache at each shape.")
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
        left.set_ylim(0, left.get_ylim()[1])
        left.legend(loc="best")
        _efficiency_table(right, per_size)
        pages.append(fig)
    return pages


def decode_pages(groups: dict[str, Labelled], others: list[Measurement]) -> Iterable[Figure]:
    if not others:
        return [_unmeasured_page("Measured decode throughput (GPU executor)",
                                 "Tokens per second measured with real kernels, beside the "
                                 "cost model's simulated throughput.",
                                 NO_DECODE, lambda ax: _throughput_bars(ax, groups))]
    return measured_pages(others)


def _efficiency_table(ax, per_size) -> None:
    ax.axis("off")
    rows = [[layout, str(int(size)), f"{gbs:,.0f}", f"{eff:.0%}", str(int(shapes))]
            for layout, size, gbs, eff, shapes in per_size[
                ["layout", "block_size", "bandwidth_gbs", "efficiency", "shapes"]
            ].itertuples(index=False)]
    table = ax.table(cellText=rows, colLabels=["layout", "block size", "GB/s (median)",
                                               "vs SDPA", "shapes"], loc="upper center",
                     cellLoc="right")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1.0, 1.3)
    ax.set_title("per block size (median over shapes)")


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
