"""Capacity curves, the vLLM paper's headline figure: latency against offered request rate, one
line per allocator, on one trace slice replayed at several rates; and the highest rate each
allocator sustains under a stated SLO, with the load regime of every run."""
from __future__ import annotations

from matplotlib.figure import Figure

from reports.regime import normalized_latency, regime
from reports.style import PLOT_AREA, new_page, note, page_legend, run_style
from reports.study import TraceStudy
from reports.textpage import heading, mono, para, text_pages

# Marker fill by regime: a reader sees at a glance which points are overloaded.
REGIME_FILL = {"idle": "white", "pressed": None, "overloaded": "0.6"}


def _curve(ax, study: TraceStudy, figure, slo_value: float, ylabel: str) -> None:
    for index, (label, points) in enumerate(study.curve.items()):
        rates = sorted(points)
        values = [figure(points[rate]) for rate in rates]
        style = run_style(index).line()
        ax.plot(rates, values, label=label, **style)
        for rate, value in zip(rates, values):
            fill = REGIME_FILL[regime(points[rate]).name] or style.get("color")
            ax.plot([rate], [value], linestyle="none", marker=style.get("marker", "o"),
                    markerfacecolor=fill, markeredgecolor=style.get("color"), markersize=6)
    ax.axhline(slo_value, color="0.3", linestyle=(0, (4, 2)), linewidth=1)
    ax.annotate("SLO", (0.01, slo_value), xycoords=("axes fraction", "data"), va="bottom",
                fontsize=8, color="0.3")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="offered request rate (req/s, log scale)", ylabel=ylabel)


def capacity_page(study: TraceStudy) -> Figure:
    slo = study.slo
    fig = new_page(f"{study.trace}: capacity curves (latency against request rate)",
                   "One slice of the trace replayed at several rates. Marker fill: white = "
                   "idle, grey = overloaded, solid = memory pressed (see the verdict for the "
                   f"definitions). Dashed line: the SLO ({study.slo.describe()}).")
    left, right = fig.subplots(1, 2, gridspec_kw={**PLOT_AREA, "wspace": 0.3})
    if not study.has_curve:
        note(left, "these runs hold one rate only: no curve")
        right.axis("off")
        return fig
    _curve(left, study, lambda run: run.figure("ttft_p99_s"), slo.ttft_p99_s,
           "TTFT p99 (s, log scale)")
    _curve(right, study, normalized_latency, slo.normalized_latency_s,
           "normalized latency: mean E2E / output tokens (s/token)")
    page_legend(fig, right)
    return fig


def _regime_table(study: TraceStudy) -> str:
    rates = sorted({rate for points in study.curve.values() for rate in points})
    width = max(len(label) for label in study.curve)
    lines = [" " * width + "".join(f"{rate:>12.2f}" for rate in rates)]
    for label, points in study.curve.items():
        cells = [regime(points[rate]).name if rate in points else "-" for rate in rates]
        lines.append(label.ljust(width) + "".join(f"{cell:>12}" for cell in cells))
    return "\n".join(lines)


def sustained_page(studies: list[TraceStudy]) -> list[Figure]:
    blocks = [para("A rate counts as sustained when the run meets its trace's SLO there and at every lower rate of the grid. The grid's spacing is the "
                   "resolution: allocators at the same grid rate tie; one a step ahead sustains "
                   "more, by anything up to that step.")]
    for study in studies:
        if not study.has_curve:
            continue
        blocks += [heading(f"Trace {study.trace}"), para(f"SLO: {study.slo.describe()}.")]
        sustained = study.sustained()
        width = max(len(label) for label in sustained)
        rows = [f"{label.ljust(width)}  {rate:8.2f} req/s" if rate > 0 else
                f"{label.ljust(width)}  not even the lowest rate" for label, rate
                in sustained.items()]
        blocks += [para("Highest rate sustained under the SLO:"), mono("\n".join(rows)),
                   para("Load regime of every run (columns: offered rate, req/s):"),
                   mono(_regime_table(study))]
    if len(blocks) == 1:
        blocks.append(para("No trace was replayed at more than one rate."))
    return text_pages("Sustained request rate under the SLO, and the load regime of every run",
                      blocks, "Computed from the capacity-curve runs.")


def curve_points(study: TraceStudy) -> dict[str, list[tuple[float, float, float]]]:
    """label -> [(rate, TTFT p99 s, normalized latency s/token)], for tables and tests."""
    return {label: [(rate, points[rate].figure("ttft_p99_s"), normalized_latency(points[rate]))
                    for rate in sorted(points)]
            for label, points in study.curve.items()}

