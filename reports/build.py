"""Assemble the report PDF: title page, the verdict, one section per trace comparing its
allocators, the block-size ablation and the measured GPU pages."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import matplotlib.pyplot as plt
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from reports.gpu import ablation_page, decode_pages, kernel_pages
from reports.latency import latency_page
from reports.load import NO_FACTS, AllocatorFacts, Run, group_by_trace, load_run, run_labels
from reports.measured import find_measurements
from reports.schema import results_dir as measured_results_dir
from reports.sharing import sharing_pages
from reports.splits import is_splits, splits_page
from reports.style import RC
from reports.table import summary_page
from reports.textpage import Block, bullet, heading, mono, para, sub, text_pages
from reports.title import title_pages
from reports.timeline import concurrency_page, queue_page, utilization_page
from reports.verdict import TraceVerdict, overall_line, trace_verdict
from reports.waste import waste_page

SECTION_PAGES = (utilization_page, waste_page, queue_page, concurrency_page, latency_page,
                 summary_page)
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


def verdict_pages(verdicts: list[TraceVerdict]) -> list[Figure]:
    blocks: list[Block] = []
    if any(verdict.findings for verdict in verdicts):
        blocks += [heading("At a glance (runs within 1% of the best share the win)"),
                   mono(_winners_table(verdicts))]
    if not verdicts:
        blocks.append(para("No runs were given, so there is nothing to judge."))
    for verdict in verdicts:
        blocks += [heading(f"Trace {verdict.trace}"), para(overall_line(verdict))]
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


def _page_makers(groups: dict[str, Labelled], ablation: dict[str, Labelled], results_dir: Path,
                 built: datetime, sweep_dirs: list[Path], slo_ttft_s: float,
                 facts: AllocatorFacts) -> Iterable[Callable[[], list[Figure]]]:
    """One callable per page or run of pages, so that only one figure is in memory at a time."""
    kernels, others = find_measurements(results_dir)
    splits = [m for m in others if is_splits(m)]
    others = [m for m in others if not is_splits(m)]
    verdicts = [trace_verdict(trace, labelled, facts) for trace, labelled in groups.items()]
    yield lambda: title_pages(groups, built, ablation)
    yield lambda: verdict_pages(verdicts)
    for trace, labelled in groups.items():
        for page in SECTION_PAGES:
            yield lambda page=page, trace=trace, labelled=labelled: [page(trace, labelled)]
        yield lambda trace=trace, labelled=labelled: sharing_pages(trace, labelled)
    both = {trace: [*groups.get(trace, []), *ablation.get(trace, [])]
            for trace in dict.fromkeys([*groups, *ablation])}
    yield lambda: [ablation_page(both, kernels)]
    yield lambda: kernel_pages(groups, kernels)
    yield lambda: decode_pages(groups, others)
    yield lambda: [splits_page(m) for m in splits]
    if sweep_dirs:
        from reports.sweep_figures import sweep_pages

        for sweep_dir in sweep_dirs:
            yield lambda sweep_dir=sweep_dir: sweep_pages(sweep_dir, slo_ttft_s=slo_ttft_s,
                                                          facts=facts)


def _labelled_groups(run_dirs: Iterable[str | Path], facts: AllocatorFacts) -> dict[str, Labelled]:
    runs = [load_run(path) for path in run_dirs]
    return {trace: list(zip(run_labels(group, facts), group))
            for trace, group in group_by_trace(runs, facts).items()}


def build_report(run_dirs: Iterable[str | Path], out_pdf: str | Path, *,
                 ablation_dirs: Iterable[str | Path] = (),
                 results_dir: str | Path | None = None,
                 sweep_dirs: Iterable[str | Path] = (),
                 slo_ttft_s: float = 2.0,
                 built: datetime | None = None,
                 allocators: AllocatorFacts = NO_FACTS) -> list[str]:
    """Write the report PDF for the given run directories; return the page titles in order.

    Each trace's section compares its run_dirs. ablation_dirs are runs that feed only the
    block-size ablation (one allocator at other block sizes), so that they do not crowd the
    sections; sweep directories add their own pages after the measured ones, with goodput
    judged against a p99 TTFT SLO of slo_ttft_s. allocators orders and labels the runs (the
    caller reads it from the allocators' specs)."""
    groups = _labelled_groups(run_dirs, allocators)
    ablation = _labelled_groups(ablation_dirs, allocators)
    built = built or datetime.now(timezone.utc)
    out_pdf = Path(out_pdf)
    out_pdf.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Title": "kvharness report: KV-cache allocators on real traces",
                "Subject": ", ".join(groups) or "no runs", "Creator": "kvharness report",
                "CreationDate": built}
    titles = []
    with plt.rc_context(RC), PdfPages(out_pdf, metadata=metadata) as pdf:
        for make in _page_makers(groups, ablation, Path(results_dir or measured_results_dir()), built,
                                 [Path(d) for d in sweep_dirs], slo_ttft_s, allocators):
            for fig in make():
                titles.append(fig.get_suptitle())
                pdf.savefig(fig)
                plt.close(fig)
    return titles
