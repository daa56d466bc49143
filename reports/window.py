"""The sliding-window pages: what a model's attention window frees, allocator by allocator.

Each allocator runs the same trace twice on the same model, once with its sliding window and
once with full attention. The pages set the two side by side: the KV a running request holds
(live + stale + reserved + internal slots per running request, time-weighted), how many
requests run at once, throughput and p99 TTFT, where the memory goes (the waste breakdown, with
the stale tokens an allocator's unit keeps it from letting go), and a paragraph of takeaways
computed from those figures.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from reports.load import NO_FACTS, AllocatorFacts, Run, run_labels, time_weights
from reports.style import new_page
from reports.textpage import Block, heading, mono, para, text_pages
from reports.units import count, is_number, pct, seconds
from reports.waste import waste_page

HELD_COLUMNS = ("live", "stale", "reserved", "internal")  # the slots running requests hold


def window_of(run: Run) -> int | None:
    """The sliding window the run's model attended through (None: full attention)."""
    model = run.config.get("model") or {}
    window = model.get("sliding_window") if isinstance(model, dict) else None
    return int(window) if window is not None else None


def held_per_request(run: Run) -> float:
    """KV slots a running request holds, time-weighted over the steps that run one."""
    steps = run.steps[run.steps["running"] > 0]
    if steps.empty:
        return float("nan")
    held = steps[list(HELD_COLUMNS)].sum(axis=1).to_numpy(dtype=float)
    per_request = held / steps["running"].to_numpy(dtype=float)
    return float(np.average(per_request, weights=time_weights(steps)))


@dataclass(frozen=True)
class WindowPair:
    """One allocator's runs of a trace with and without the model's sliding window."""

    label: str
    full: Run
    windowed: Run

    @property
    def window(self) -> int:
        return window_of(self.windowed)

    def held(self) -> tuple[float, float]:
        return held_per_request(self.full), held_per_request(self.windowed)

    def freed(self) -> float:
        """The share of a running request's KV the window lets go."""
        full, windowed = self.held()
        return 1.0 - windowed / full if full > 0 else float("nan")

    def figures(self, key: str) -> tuple[float, float]:
        return self.full.figure(key), self.windowed.figure(key)

    def ratio(self, key: str) -> float:
        full, windowed = self.figures(key)
        return windowed / full if is_number(full) and full > 0 else float("nan")


def pair_runs(runs: list[Run], facts: AllocatorFacts = NO_FACTS) -> list[WindowPair]:
    """The allocators that ran both with a window and without, in facts' order; raises
    ValueError when runs of one allocator are not one of each."""
    windowed = sorted((run for run in runs if window_of(run) is not None),
                      key=lambda run: (facts.rank(run.allocator), run.allocator))
    full = {run.allocator: run for run in runs if window_of(run) is None}
    pairs = []
    for label, run in zip(run_labels(windowed, facts), windowed):
        if run.allocator not in full:
            raise ValueError(f"{run.path}: no run of {run.allocator} with full attention beside "
                             "it to compare with")
        pairs.append(WindowPair(label, full[run.allocator], run))
    return pairs


def _span(values: list[float], text) -> str:
    """'a' when the values read the same, else 'lowest\u2013highest'."""
    low, high = text(min(values)), text(max(values))
    return low if low == high else f"{low}\u2013{high}"


def _names(labels: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


def _times(value: float) -> str:
    return f"{value:.1f}x"


def takeaway(pairs: list[WindowPair], trace: str) -> str:
    """A paragraph of what the window does to each allocator, every figure from the runs."""
    if not pairs:
        return "No allocator ran both with a sliding window and without: nothing to compare."
    window = pairs[0].window
    freeing = [p for p in pairs if p.freed() > 0.01]
    keeping = [p for p in pairs if p not in freeing]
    model = (pairs[0].windowed.config.get("model") or {}).get("name", "the model")
    parts = [f"On {trace}, {model} ran through each allocator once with a {window:,}-token "
             "sliding window and once with full attention."]
    if freeing:
        def both(key: str, text) -> tuple[str, str]:
            full, windowed = zip(*(p.figures(key) for p in freeing))
            return _span(list(full), text), _span(list(windowed), text)

        full_kv, window_kv = (_span([p.held()[i] for p in freeing], count) for i in (0, 1))
        peak_full, peak_window = both("peak_running", count)
        ttft_full, ttft_window = both("ttft_p99_s", seconds)
        parts.append(
            f"{_names([p.label for p in freeing])} let go of "
            f"{_span([p.freed() for p in freeing], pct)} of the KV a running request holds "
            f"({full_kv} to {window_kv} tokens on average), so they run "
            f"{_span([p.ratio('mean_running') for p in freeing], _times)} as many requests at "
            f"once (peak {peak_window} against {peak_full}) at "
            f"{_span([p.ratio('throughput_tok_s') for p in freeing], _times)} the throughput, "
            f"and p99 TTFT goes from {ttft_full} to {ttft_window}.")
        stale = {p.label: p.windowed.figure("waste_stale") for p in freeing}
        most = max(stale, key=stale.get)
        if stale[most] > 2 * min(stale.values()) and stale[most] > 0.005:
            rest = [label for label in stale if label != most]
            parts.append(
                f"What a unit keeps behind the window differs: {pct(stale[most], 1)} of "
                f"{most}'s memory is stale (a prompt's KV goes a whole prefix-cache entry at a "
                f"time), against {_span([stale[label] for label in rest], lambda v: pct(v, 1))} "
                f"for {_names(rest)}.")
        cached = [p.windowed.figure("waste_cached") for p in freeing]
        if max(cached) > 0.05:
            parts.append(
                f"Released blocks that hold a prompt prefix wait in the prefix cache: "
                f"{_span(cached, pct)} of their memory is cached (evictable) under the window, "
                f"against {_span([p.full.figure('waste_cached') for p in freeing], pct)} "
                "without.")
    for pair in keeping:
        parts.append(
            f"{pair.label} releases nothing of its reservation ({count(pair.held()[1])} tokens "
            f"per request): {pct(pair.windowed.figure('waste_stale'))} of its memory holds "
            "tokens behind the window, and it runs "
            f"{count(pair.figures('mean_running')[1], 1)} requests at once with the window, "
            f"{count(pair.figures('mean_running')[0], 1)} without.")
    return " ".join(part[0].upper() + part[1:] for part in parts)


def _table(pairs: list[WindowPair]) -> str:
    """Monospaced rows: per allocator, full attention against the window."""
    rows = [("allocator", "KV/request full", "window", "freed", "running full", "window",
             "tok/s full", "window", "TTFT p99 full", "window", "stale", "cached")]
    for p in pairs:
        full, windowed = p.held()
        rows.append((
            p.label, count(full), count(windowed), pct(p.freed()),
            *(count(v, 1) for v in p.figures("mean_running")),
            *(count(v) for v in p.figures("throughput_tok_s")),
            *(seconds(v) for v in p.figures("ttft_p99_s")),
            pct(p.windowed.figure("waste_stale"), 1), pct(p.windowed.figure("waste_cached"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) if i else cell.ljust(width)
                       for i, (cell, width) in enumerate(zip(row, widths))) for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _bars(fig: Figure, pairs: list[WindowPair]) -> None:
    """Three panels of grouped bars: KV per running request, mean running, throughput."""
    panels = (("KV a running request holds (tokens)", lambda p: p.held()),
              ("requests running at once (mean)", lambda p: p.figures("mean_running")),
              ("throughput (output tokens/s)", lambda p: p.figures("throughput_tok_s")))
    axes = fig.subplots(1, 3, gridspec_kw={"left": 0.1, "right": 0.97, "top": 0.82,
                                           "bottom": 0.12, "wspace": 0.55})
    y = np.arange(len(pairs))[::-1]
    for ax, (title, values) in zip(axes, panels):
        full, windowed = np.array([values(p) for p in pairs], dtype=float).T
        ax.barh(y + 0.2, np.nan_to_num(full), height=0.38, facecolor="0.8", edgecolor="black",
                hatch="//", label="full attention")
        ax.barh(y - 0.2, np.nan_to_num(windowed), height=0.38, facecolor="0.2",
                edgecolor="black", label=f"{pairs[0].window:,}-token window")
        ax.set_yticks(y, [p.label for p in pairs])
        ax.set_title(title)
        ax.set_axisbelow(True)
        ax.margins(x=0.15)
        for pos, value in ((y + 0.2, full), (y - 0.2, windowed)):
            for yy, vv in zip(pos, value):
                ax.annotate(count(vv), (np.nan_to_num(vv), yy), xytext=(3, 0),
                            textcoords="offset points", va="center", fontsize=7)
    axes[0].legend(loc="lower right", fontsize=7)


def window_pages(pairs: list[WindowPair], trace: str) -> list[Figure]:
    """The takeaway and table, the bars, and the waste breakdown of both sets of runs."""
    title = f"{trace}: what a sliding window frees, per allocator"
    blocks: list[Block] = [heading("Takeaway"), para(takeaway(pairs, trace))]
    if pairs:
        blocks += [heading("Full attention against the window"), mono(_table(pairs)),
                   para("KV/request: live + stale + reserved + internal slots over running "
                        "requests, time-weighted; freed: 1 - window / full of it. stale and "
                        "cached: time-weighted shares of backed memory under the window.")]
    pages = text_pages(title, blocks, "Every figure from the runs' steps and summaries; "
                       "the same trace, model, GPU and seed for every run.")
    if not pairs:
        return pages
    bars = new_page(f"{trace}: KV per request, concurrency and throughput, with and without "
                    "the window")
    _bars(bars, pairs)
    labelled = [(f"{p.label} {kind}", run) for p in pairs
                for kind, run in (("full", p.full), ("window", p.windowed))]
    return [*pages, bars, waste_page(f"{trace} with and without the window", labelled)]


def write_window_report(pairs: list[WindowPair], trace: str, out_pdf: str | Path) -> list[str]:
    """The window pages as a PDF of their own; returns the page titles."""
    from reports.build import write_pdf
    from reports.title import build_time

    out_pdf = Path(out_pdf)
    out_pdf.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Title": "kvharness: a sliding window per allocator", "Subject": trace,
                "Creator": "kvharness window", "CreationDate": build_time()}
    return write_pdf([lambda: window_pages(pairs, trace)], out_pdf, metadata)
