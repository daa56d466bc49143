"""Assemble the report PDF: title page, the verdict, capacity curves and sustained rates, one
section per trace comparing its allocators at one rate, the block-size ablation, the KV dtype
comparison and the measured GPU pages."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Mapping

import matplotlib.pyplot as plt
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from reports.capacity import capacity_page, sustained_page
from reports.cluster import cluster_pages, is_cluster_run
from reports.events import admission_page, fragmentation_page, throughput_page
from reports.fidelity import fidelity_pages
from reports.gpu import ablation_page, decode_pages, kernel_pages
from reports.kv_dtype import KvComparison, kv_dtype_comparisons, kv_dtype_pages
from reports.latency import latency_page
from reports.load import NO_FACTS, AllocatorFacts, Run, group_by_trace, load_run, run_labels
from reports.measured import find_measurements, is_kv_accuracy, is_kv_dtype_kernel
from reports.regime import Slo, rate_key
from reports.schema import results_dir as measured_results_dir
from reports.sharing import sharing_pages
from reports.splits import is_splits, splits_page
from reports.study import TraceStudy, split_ablation, split_kv_dtype, trace_studies
from reports.style import RC
from reports.table import summary_page
from reports.textpage import Block, bullet, heading, mono, para, sub, text_pages
from reports.title import build_time, title_pages
from reports.timeline import concurrency_page, queue_page, utilization_page
from reports.units import pct
from reports.verdict import (TIE_RELATIVE, TraceVerdict, overall_line, regime_lines,
                             sustained_line, trace_verdict)
from reports.waste import waste_page

SECTION_PAGES = (utilization_page, waste_page, fragmentation_page, queue_page, admission_page,
                 concurrency_page, throughput_page, latency_page, summary_page)
# The checkout's committed GPU measurements, wherever the command is run from.
METRIC_TITLES = {"utilization": "Utilization", "admitted concurrency": "Admitted concurrency",
                 "throughput": "Throughput", "TTFT p99": "TTFT p99"}

Labelled = list[tuple[str, Run]]


def _winners_table(verdicts: list[TraceVerdict]) -> str:
    """Monospaced rows: trace, question, winner(s), winning figure."""
    rows = [("trace", "question", "best", "figure")]
    rows += [(verdict.trace, finding.metric, verdict.winners_text(finding), finding.value)
             for verdict in verdicts for finding in verdict.findings]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _study_blocks(study: TraceStudy | None) -> list[Block]:
    """The load regime of each section run and, with a capacity curve, who sustains most."""
    if study is None:
        return []
    rate = f" at {study.section_rate:.2f} req/s" if study.section_rate == study.section_rate else ""
    blocks = [bullet(f"Load regime of each run{rate} (the rate the section shows):")]
    blocks += [sub(line) for line in regime_lines(study.section)]
    if study.has_curve:
        rates = sorted({r for points in study.curve.values() for r in points})
        step = rates[1] / rates[0] if len(rates) > 1 else 1.0
        blocks.append(bullet(f"Capacity ({study.slo.describe()}): "
                             f"{sustained_line(study.sustained(), step)}"))
    return blocks


def verdict_pages(verdicts: list[TraceVerdict], studies: dict[str, TraceStudy] | None = None
                  ) -> list[Figure]:
    studies = studies or {}
    blocks: list[Block] = []
    if any(verdict.findings for verdict in verdicts):
        blocks += [heading(f"At a glance (noise margin: runs within {pct(TIE_RELATIVE)} of "
                           "the best share the win)"),
                   mono(_winners_table(verdicts))]
    if not verdicts:
        blocks.append(para("No runs were given, so there is nothing to judge."))
    for verdict in verdicts:
        blocks += [heading(f"Trace {verdict.trace}"), para(overall_line(verdict))]
        blocks += _study_blocks(studies.get(verdict.trace))
        for finding in verdict.findings:
            blocks.append(bullet(f"{METRIC_TITLES[finding.metric]}: "
                                 f"{verdict.winners_text(finding)}, {finding.value}."))
            blocks += [sub(sentence) for sentence in finding.why]
        if not verdict.findings:
            blocks.append(bullet("No comparison on this trace."))
        blocks += [bullet(f"Note: {text}") for text in verdict.notes]
    return text_pages("The verdict: which allocator wins, and why", blocks,
                      "Computed from the runs' summaries; the per-trace sections that follow "
                      "show the figures behind each sentence.")


def _page_makers(studies: list[TraceStudy], ablation: dict[str, Labelled], results_dir: Path,
                 built: datetime, sweep_dirs: list[Path], slo_ttft_s: float,
                 facts: AllocatorFacts, run_dirs: list[Path] = (),
                 kv_comparisons: list[KvComparison] = ()
                 ) -> Iterable[Callable[[], list[Figure]]]:
    """One callable per page or run of pages, so that only one figure is in memory at a time."""
    kernels, others = find_measurements(results_dir)
    splits = [m for m in others if is_splits(m)]
    kv_kernels = [m for m in others if is_kv_dtype_kernel(m)]
    kv_accuracy = [m for m in others if is_kv_accuracy(m)]
    others = [m for m in others if m not in splits + kv_kernels + kv_accuracy]
    groups = {study.trace: study.section for study in studies}
    verdicts = [trace_verdict(trace, labelled, facts) for trace, labelled in groups.items()]
    others_kv = [run for comparison in kv_comparisons
                 for points in list(comparison.curves.values())[1:] for run in points.values()]
    yield lambda: title_pages(groups, built, ablation, others_kv)
    yield lambda: verdict_pages(verdicts, {study.trace: study for study in studies})
    curves = [study for study in studies if study.has_curve]
    for study in curves:
        yield lambda study=study: [capacity_page(study)]
    if curves:
        yield lambda: sustained_page(curves)
    for trace, labelled in groups.items():
        for page in SECTION_PAGES:
            yield lambda page=page, trace=trace, labelled=labelled: [page(trace, labelled)]
        yield lambda trace=trace, labelled=labelled: sharing_pages(trace, labelled)
    # Without separate ablation runs, any allocator the sections hold at several grains is one.
    yield lambda: [ablation_page(ablation or groups, kernels)]
    yield lambda: kv_dtype_pages(list(kv_comparisons), kv_kernels, kv_accuracy)
    yield lambda: kernel_pages(groups, kernels)
    yield lambda: decode_pages(groups, others)
    yield lambda: [splits_page(m) for m in splits]
    yield lambda: fidelity_pages(results_dir)
    yield lambda: cluster_pages(run_dirs, slo_ttft_s)
    if sweep_dirs:
        from reports.sweep_figures import sweep_pages

        for sweep_dir in sweep_dirs:
            yield lambda sweep_dir=sweep_dir: sweep_pages(sweep_dir, slo_ttft_s=slo_ttft_s,
                                                          facts=facts)


def _ablation_groups(runs: list[Run], ablation: list[Run], facts: AllocatorFacts
                     ) -> dict[str, Labelled]:
    """Per trace, the ablation runs with the comparison runs of the same allocators at the same
    rate (the default grain's point), so that every point of a curve shares one load."""
    points = {(run.trace_name, run.allocator, rate_key(run)) for run in ablation}
    same = [run for run in runs if (run.trace_name, run.allocator, rate_key(run)) in points]
    return {trace: list(zip(run_labels(group, facts), group))
            for trace, group in group_by_trace([*same, *ablation], facts).items()}


def build_report(run_dirs: Iterable[str | Path], out_pdf: str | Path, *,
                 ablation_dirs: Iterable[str | Path] = (),
                 results_dir: str | Path | None = None,
                 sweep_dirs: Iterable[str | Path] = (),
                 slo_ttft_s: float = 2.0,
                 built: datetime | None = None,
                 allocators: AllocatorFacts = NO_FACTS,
                 slos: Mapping[str, Slo] | None = None) -> list[str]:
    """Write the report PDF for the given run directories; return the page titles in order.

    Each trace's section compares its run_dirs at one rate (the lowest where memory presses,
    when they hold several rates; all rates draw the capacity curves, judged against each
    trace's SLO in slos, DEFAULT_SLO where none is given).
    ablation_dirs, and run_dirs at another grain than their allocator's default (allocators
    says which), feed only the block-size ablation, so that they do not crowd the sections;
    run_dirs of another KV dtype than most runs' feed only the KV dtype comparison; sweep
    directories add their own pages after the measured ones, with goodput
    judged against a p99 TTFT SLO of slo_ttft_s. allocators orders and labels the runs (the
    caller reads it from the allocators' specs)."""
    run_dirs = [Path(d) for d in run_dirs]
    # Cluster runs have a page of their own rather than a place among one trace's allocators.
    loaded = [load_run(path) for path in run_dirs if not is_cluster_run(path)]
    loaded, other_dtype_runs = split_kv_dtype(loaded)
    runs, ablation_runs = split_ablation(loaded, allocators)
    ablation_runs += [load_run(path) for path in ablation_dirs]
    studies = trace_studies(runs, allocators, slos)
    kv_comparisons = kv_dtype_comparisons(runs, other_dtype_runs, allocators, slos)
    ablation = _ablation_groups(runs, ablation_runs, allocators)
    built = built or build_time()
    out_pdf = Path(out_pdf)
    out_pdf.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Title": "kvharness report: KV-cache allocators on real traces",
                "Subject": ", ".join(study.trace for study in studies) or "no runs", "Creator": "kvharness report",
                "CreationDate": built}
    return write_pdf(_page_makers(studies, ablation, Path(results_dir or measured_results_dir()),
                                  built, [Path(d) for d in sweep_dirs], slo_ttft_s, allocators,
                                  run_dirs, kv_comparisons), out_pdf, metadata)


def write_pdf(makers: Iterable[Callable[[], Iterable[Figure]]], out_pdf: Path,
              metadata: Mapping[str, object]) -> list[str]:
    """Write the pages each maker draws (in the report's style) to out_pdf, each closed once
    written; return the page titles in order. A maker's pages are in memory together unless it
    yields them one at a time (matplotlib warns past 20 open figures)."""
    titles = []
    with plt.rc_context(RC), PdfPages(out_pdf, metadata=metadata) as pdf:
        for make in makers:
            for fig in make():
                titles.append(fig.get_suptitle())
                pdf.savefig(fig)
                plt.close(fig)
    return titles
