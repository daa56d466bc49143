"""The KV cache's element type: one trace simulated with a bf16 and with an fp8 cache, and what
fp8 costs measured on a GPU (decode kernel speed, the accuracy of a decoder's outputs).

fp8 stores one byte per element where bf16 stores two, so the same memory holds twice the
tokens: more sequences run at once and fewer are preempted where memory presses. The simulated
page shows how much of that reaches latency and throughput on one allocator's capacity curve;
the measured page what it costs in decode speed and in the outputs. Every takeaway sentence is
computed from the figures beside it.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.load import NO_FACTS, AllocatorFacts, Run, run_labels
from reports.regime import Slo, rate_key, regime, sustained_rate
from reports.schema import DEFAULT_KV_DTYPE, Measurement
from reports.study import trace_slo
from reports.style import new_page, note, run_style
from reports.textpage import Block, heading, mono, para, text_pages
from reports.units import count, pct, seconds

ACCURACY_COMMAND = "PYTHONPATH=. python benchmarks/bench_fp8_accuracy.py --out benchmarks/results"
KERNEL_COMMAND = ("PYTHONPATH=. python benchmarks/bench_paged_decode_fp8.py --out "
                  "benchmarks/results")
# (label, summary key, format) of the table at the compared rate.
FIGURES = (
    ("KV budget (tokens)", "budget_slots", count),
    ("bytes per token", "bytes_per_token", count),
    ("peak running sequences", "peak_running", count),
    ("mean running sequences", "mean_running", lambda v: count(v, 1)),
    ("preemptions", "preemptions", count),
    ("completed requests", "completed", count),
    ("throughput (tokens/s)", "throughput_tok_s", count),
    ("TTFT p50", "ttft_p50_s", seconds),
    ("TTFT p99", "ttft_p99_s", seconds),
    ("TPOT p50", "tpot_p50_s", seconds),
)


@dataclass(frozen=True)
class KvComparison:
    """One allocator on one trace at several rates, with two or more KV dtypes: the study's
    dtype first."""

    trace: str
    label: str
    curves: dict[str, dict[float, Run]]  # kv dtype -> offered rate (req/s) -> run
    slo: Slo

    @property
    def rates(self) -> list[float]:
        """The rates every dtype ran at."""
        common = set.intersection(*(set(points) for points in self.curves.values()))
        return sorted(rate for rate in common if np.isfinite(rate))

    @property
    def compared_rate(self) -> float:
        """The lowest common rate at which the study dtype's run preempted (memory turned
        running sequences away), else the lowest at which it is not idle, else the highest
        common rate; NaN when there is none."""
        study = next(iter(self.curves.values()))
        rates = self.rates
        preempted = [rate for rate in rates if study[rate].figure("preemptions") > 0]
        pressed = [rate for rate in rates if regime(study[rate]).name != "idle"]
        for candidates in (preempted, pressed):
            if candidates:
                return candidates[0]
        return rates[-1] if rates else float("nan")

    def at(self, rate: float) -> dict[str, Run]:
        return {dtype: points[rate] for dtype, points in self.curves.items()}


def kv_dtype_comparisons(study_runs: list[Run], other_runs: list[Run],
                         facts: AllocatorFacts = NO_FACTS,
                         slos: Mapping[str, Slo] | None = None) -> list[KvComparison]:
    """Each run of another KV dtype with the study's runs of its trace, allocator and
    parameters, grouped by offered rate."""
    def key(run: Run) -> tuple:
        return run.trace_name, run.allocator, repr(sorted(run.allocator_params.items()))

    wanted = {key(run) for run in other_runs}
    groups: dict[tuple, list[Run]] = {}
    for run in [*study_runs, *other_runs]:
        if key(run) in wanted:
            groups.setdefault(key(run), []).append(run)
    study_dtype = study_runs[0].kv_dtype if study_runs else DEFAULT_KV_DTYPE
    comparisons = []
    for (trace, _, _), runs in groups.items():
        curves: dict[str, dict[float, Run]] = {}
        for run in sorted(runs, key=lambda run: (run.kv_dtype != study_dtype, run.kv_dtype)):
            curves.setdefault(run.kv_dtype, {})[rate_key(run)] = run
        if len(curves) > 1:
            comparisons.append(KvComparison(trace, run_labels(runs[:1], facts)[0], curves,
                                            trace_slo(slos, trace)))
    return comparisons


def _where(base: Run, name: str) -> str:
    """Why the compared rate was chosen, from the study dtype's run there."""
    state = regime(base)
    if base.figure("preemptions") > 0:
        return (f"the lowest rate of the curve where {name} preempts, {state.name} there "
                f"({state.why})")
    if state.name != "idle":
        return f"the lowest rate of the curve where memory presses with {name} ({state.why})"
    return f"the highest rate of the curve; memory never pressed with {name}"


def _priced(run: Run, base: Run, name: str, base_name: str) -> str:
    """How the cost model priced decode attention over the other dtype (nothing when it did
    not say: a run without the comparison's pricing)."""
    details = run.meta.get("executor_details") or {}
    ratio = details.get("kv_decode_bandwidth_ratio")
    if not ratio:
        return ""
    source = details.get("kv_decode_source") or "no measurement: the bandwidth-bound guess"
    bytes_ratio = run.figure("bytes_per_token") / base.figure("bytes_per_token")
    return (f" Decode attention over {name} is priced at {ratio:.2f}x the {base_name} kernel's "
            f"bandwidth ({source}): {bytes_ratio:.2g}x the bytes in {bytes_ratio / ratio:.2f}x "
            "the time.")


def takeaway(comparison: KvComparison) -> str:
    """The paragraph of the simulated page: the compared rate's figures, and the sustained
    rates, of the other dtype against the study's."""
    rate = comparison.compared_rate
    if not np.isfinite(rate):
        return "The dtypes share no rate of the curve: nothing to compare."
    (base_name, base), (name, run) = list(comparison.at(rate).items())[:2]

    def both(key: str, fmt=count) -> str:
        return f"{fmt(run.figure(key))} against {fmt(base.figure(key))}"

    throughput = run.figure("throughput_tok_s") / base.figure("throughput_tok_s") - 1
    sustained = {dtype: sustained_rate(points, comparison.slo)
                 for dtype, points in comparison.curves.items()}
    return (f"On {comparison.trace} at {rate:.3g} req/s, {_where(base, base_name)}: "
            f"{comparison.label} with an {name} cache (against {base_name}) holds "
            f"{both('budget_slots')} tokens "
            f"({run.figure('budget_slots') / base.figure('budget_slots'):.2f}x). It ran up to "
            f"{both('peak_running')} sequences at once (mean "
            f"{both('mean_running', lambda v: count(v, 1))}), preempted "
            f"{both('preemptions')} times and served {both('throughput_tok_s')} tokens/s "
            f"({throughput:+.0%}); TTFT p99 {both('ttft_p99_s', seconds)}, TPOT p50 "
            f"{both('tpot_p50_s', seconds)}. Under the SLO ({comparison.slo.describe()}) {name} "
            f"sustains {sustained[name]:.3g} req/s, {base_name} {sustained[base_name]:.3g}."
            + _priced(run, base, name, base_name))


def _curve(ax, comparison: KvComparison, key: str, ylabel: str, log: bool) -> None:
    for index, (dtype, points) in enumerate(comparison.curves.items()):
        rates = [rate for rate in sorted(points) if np.isfinite(rate)]
        ax.plot(rates, [points[rate].figure(key) for rate in rates], label=f"{dtype} KV",
                **run_style(index).line())
    rate = comparison.compared_rate
    if np.isfinite(rate):
        ax.axvline(rate, color="0.5", linestyle=(0, (2, 2)), linewidth=0.8)
    ax.set_xscale("log", base=2)
    if log:
        ax.set_yscale("log")
    ax.set(xlabel="offered request rate (req/s, log scale)", ylabel=ylabel)


def _figures_table(ax, comparison: KvComparison) -> None:
    ax.axis("off")
    rate = comparison.compared_rate
    if not np.isfinite(rate):
        note(ax, "no rate common to both dtypes")
        return
    runs = comparison.at(rate)
    cells = [[label, *(fmt(run.figure(key)) for run in runs.values())]
             for label, key, fmt in FIGURES]
    table = ax.table(cellText=cells, colLabels=["", *(f"{d} KV" for d in runs)],
                     loc="upper center", cellLoc="right", colWidths=[0.4] + [0.2] * len(runs))
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    ax.set_title(f"at {rate:.3g} req/s (dotted line)", fontsize=9)


def comparison_page(comparison: KvComparison) -> Figure:
    dtypes = " against ".join(reversed(list(comparison.curves)))
    fig = new_page(f"{comparison.trace}: {comparison.label} with {dtypes} KV (simulated)",
                   takeaway(comparison))
    axes = fig.subplots(1, 3, gridspec_kw={"top": 0.76, "bottom": 0.45, "left": 0.07,
                                           "right": 0.97, "wspace": 0.3})
    _curve(axes[0], comparison, "ttft_p99_s", "TTFT p99 (s, log scale)", log=True)
    _curve(axes[1], comparison, "mean_running", "mean running sequences", log=False)
    _curve(axes[2], comparison, "throughput_tok_s", "throughput (output tokens/s)", log=False)
    axes[0].legend(loc="best")
    _figures_table(fig.add_axes((0.2, 0.03, 0.6, 0.33)), comparison)
    return fig


def kernel_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """Per shape of the fp8 kernel table: bf16 and fp8 times, fp8's tokens of context per
    second over bf16's (bf16 time / fp8 time), its bandwidth over bf16's and both errors."""
    key = ["batch", "context", "block_size", "layout"]
    base = table[table["kv_dtype"] == DEFAULT_KV_DTYPE]
    other = table[table["kv_dtype"] != DEFAULT_KV_DTYPE]
    both = other.merge(base, on=key, suffixes=("", "_base"))
    both["speed"] = both["median_us_base"] / both["median_us"]
    both["bandwidth"] = both["bandwidth_gbs"] / both["bandwidth_gbs_base"]
    return both.sort_values(key).reset_index(drop=True)


def _kernel_blocks(measurement: Measurement) -> list[Block]:
    rows = kernel_ratios(measurement.table)
    if rows.empty:
        return [para(f"{measurement.path.name}: no shape measured with both dtypes.")]
    dtype = str(rows["kv_dtype"].iloc[0])
    blocks = [heading(f"Paged decode over an {dtype} cache: {measurement.device}, "
                      f"{measurement.date}"),
              para(f"{dtype} reads half the bytes of {DEFAULT_KV_DTYPE} and moves "
                   f"{rows['speed'].min():.2f}-{rows['speed'].max():.2f}x its tokens of context "
                   f"per second (median {statistics.median(rows['speed']):.2f}x) over the "
                   f"{len(rows)} shapes measured: its bandwidth is "
                   f"{pct(statistics.median(rows['bandwidth']))} of {DEFAULT_KV_DTYPE}'s "
                   "(median), what the cost model prices it at. Its max abs error against the "
                   f"float32 reference over the {DEFAULT_KV_DTYPE} pool is at most "
                   f"{rows['max_abs_err'].max():.2g} ({DEFAULT_KV_DTYPE}: "
                   f"{rows['max_abs_err_base'].max():.2g}).")]
    lines = [f"{'batch x context':>16} {'block':>6} {'bf16 us':>9} {dtype + ' us':>9} "
             f"{'speed':>6} {'err bf16':>9} {'err ' + dtype:>9}"]
    lines += [f"{f'{r.batch} x {r.context}':>16} {r.block_size:>6} {r.median_us_base:>9.1f} "
              f"{r.median_us:>9.1f} {r.speed:>5.2f}x {r.max_abs_err_base:>9.2g} "
              f"{r.max_abs_err:>9.2g}" for r in rows.itertuples()]
    return blocks + [mono("\n".join(lines)),
                     para(f"Command: {measurement.header.get('command', KERNEL_COMMAND)}")]


def _accuracy_blocks(measurement: Measurement) -> list[Block]:
    t = measurement.table
    model = ", ".join(sorted(set(t["model"].astype(str))))
    steps = int(t["steps"].max())
    diverged = t[t["first_divergence"] < t["steps"]]
    first = (f"the first difference came at step {int(diverged['first_divergence'].min())} "
             f"({len(diverged)} of {len(t)} prompts differed at all), where free-running fp8 "
             "generation would have left the bf16 tokens" if len(diverged)
             else "no prompt's tokens differed")
    attn, logits = t["attention_max_abs_err"].max(), t["logits_max_abs_err"].max()
    blocks = [heading(f"Decoder outputs over an fp8 cache against bf16: {model}, "
                      f"{measurement.device}, {measurement.date}"),
              para(f"Over {steps} greedy tokens after each of {len(t)} prompts "
                   f"({', '.join(count(n) for n in t['prompt_tokens'])} tokens), both runs fed "
                   f"the bf16 run's tokens, fp8 picked the same token "
                   f"{pct(t['token_agreement'].mean(), 1)} of the time (worst prompt "
                   f"{pct(t['token_agreement'].min(), 1)}); {first}. Max abs error of the "
                   f"attention outputs {attn:.3g} ({pct(attn / t['attention_max_abs'].max(), 1)} "
                   f"of the largest), of the logits {logits:.3g} "
                   f"({pct(logits / t['logits_max_abs'].max(), 1)}).")]
    lines = [f"{'prompt':>8} {'steps':>6} {'agree':>7} {'first diff':>10} {'attn err':>9} "
             f"{'logits err':>10}"]
    lines += [f"{r.prompt_tokens:>8} {r.steps:>6} {pct(r.token_agreement, 1):>7} "
              f"{'-' if r.first_divergence >= r.steps else r.first_divergence:>10} "
              f"{r.attention_max_abs_err:>9.3g} {r.logits_max_abs_err:>10.3g}"
              for r in t.itertuples()]
    return blocks + [mono("\n".join(lines)),
                     para(f"Command: {measurement.header.get('command', ACCURACY_COMMAND)}")]


def measured_kv_pages(kernels: list[Measurement], accuracy: list[Measurement]) -> list[Figure]:
    blocks: list[Block] = []
    for measurement in kernels:
        blocks += _kernel_blocks(measurement)
    if not kernels:
        blocks.append(para(f"Decode kernel speed over fp8: not measured yet ({KERNEL_COMMAND} "
                           "on a GPU)."))
    for measurement in accuracy:
        blocks += _accuracy_blocks(measurement)
    if not accuracy:
        blocks.append(para(f"Accuracy of a decoder's outputs over fp8: not measured yet "
                           f"({ACCURACY_COMMAND} on a GPU)."))
    return text_pages("FP8 KV measured on GPU: decode speed and accuracy", blocks,
                      "What the simulated capacity of an fp8 cache costs on the device.")


def kv_dtype_pages(comparisons: list[KvComparison], kernels: list[Measurement],
                   accuracy: list[Measurement]) -> list[Figure]:
    """The simulated comparison pages, then the measured page; none without either."""
    if not comparisons and not kernels and not accuracy:
        return []
    return [comparison_page(c) for c in comparisons] + measured_kv_pages(kernels, accuracy)
