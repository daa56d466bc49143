"""Sort loaded runs into a study: per trace, the runs of each offered rate (a capacity curve when
there are several), the one rate the per-trace sections show, the block-size ablation and the
KV dtype comparison.

The section rate is the lowest rate at which some run is not idle: there memory starts to
matter, and the allocators differ for a reason a reader can follow. A trace replayed at one rate
only is shown at that rate.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from reports.load import NO_FACTS, AllocatorFacts, Run, group_by_trace, run_labels
from reports.regime import DEFAULT_SLO, Slo, rate_key, regime, sustained_rate
from reports.schema import DEFAULT_KV_DTYPE

Labelled = list[tuple[str, Run]]
OTHER_TRACES = "*"  # the key of an SLO mapping that covers traces it does not name


@dataclass(frozen=True)
class TraceStudy:
    trace: str
    section_rate: float  # req/s of the runs the sections show (NaN: rate unknown)
    section: Labelled  # (label, run) at the section rate
    curve: dict[str, dict[float, Run]] = field(default_factory=dict)  # label -> rate -> run
    slo: Slo = DEFAULT_SLO  # what a run of this trace must meet to count as sustained

    @property
    def has_curve(self) -> bool:
        return any(len(points) > 1 for points in self.curve.values())

    def sustained(self) -> dict[str, float]:
        """label -> the highest rate sustained under the trace's SLO."""
        return {label: sustained_rate(points, self.slo) for label, points in self.curve.items()}


def is_ablation(run: Run, facts: AllocatorFacts) -> bool:
    """A run of an allocator at a grain other than its default (facts.grains says which)."""
    grain = facts.grains.get(run.allocator)
    if grain is None:
        return False
    key, default = grain
    value = run.allocator_params.get(key)
    return value is not None and value != default


def split_ablation(runs: list[Run], facts: AllocatorFacts) -> tuple[list[Run], list[Run]]:
    ablation = [run for run in runs if is_ablation(run, facts)]
    return [run for run in runs if run not in ablation], ablation


def split_kv_dtype(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """(runs of the study's KV dtype, runs of another): the study's is the dtype most runs
    have, the default on a tie. The others are the KV dtype comparison's, kept out of the
    sections as the ablation's runs are."""
    counts = Counter(run.kv_dtype for run in runs)
    study = max(counts, key=lambda dtype: (counts[dtype], dtype == DEFAULT_KV_DTYPE),
                default=DEFAULT_KV_DTYPE)
    return ([run for run in runs if run.kv_dtype == study],
            [run for run in runs if run.kv_dtype != study])


def _by_rate(runs: list[Run]) -> dict[float, list[Run]]:
    groups: dict[float, list[Run]] = {}
    for run in runs:
        groups.setdefault(rate_key(run), []).append(run)
    known = {rate: group for rate, group in groups.items() if np.isfinite(rate)}
    if len(known) != len(groups):  # a rate that cannot be told: one group, as given
        return {float("nan"): runs}
    return dict(sorted(known.items()))


def _section_rate(groups: dict[float, Labelled]) -> float:
    for rate, labelled in groups.items():
        if any(regime(run).name != "idle" for _, run in labelled):
            return rate
    return list(groups)[-1]


def trace_studies(runs: list[Run], facts: AllocatorFacts = NO_FACTS,
                  slos: Mapping[str, Slo] | None = None) -> list[TraceStudy]:
    """One study per trace; slos gives a trace its SLO (that of OTHER_TRACES, else DEFAULT_SLO,
    where it names none)."""
    slos = slos or {}
    studies = []
    for trace, group in group_by_trace(runs, facts).items():
        by_rate = {rate: list(zip(run_labels(rate_runs, facts), rate_runs))
                   for rate, rate_runs in _by_rate(group).items()}
        curve: dict[str, dict[float, Run]] = {}
        for rate, labelled in by_rate.items():
            for label, run in labelled:
                curve.setdefault(label, {})[rate] = run
        rate = _section_rate(by_rate)
        studies.append(TraceStudy(trace, rate, by_rate[rate], curve, trace_slo(slos, trace)))
    return studies


def trace_slo(slos: Mapping[str, Slo] | None, trace: str) -> Slo:
    """The SLO slos gives a trace: its own, that of OTHER_TRACES, else DEFAULT_SLO."""
    slos = slos or {}
    return slos.get(trace, slos.get(OTHER_TRACES, DEFAULT_SLO))


def summary_lines(studies: list[TraceStudy]) -> list[str]:
    """A few lines per trace for a terminal: the sustained rates, the section rate's regimes."""
    lines = []
    for study in studies:
        lines.append(f"{study.trace} (SLO: {study.slo.describe()}):")
        if study.has_curve:
            rates = ", ".join(f"{label} {rate:.2f}" for label, rate
                              in study.sustained().items())
            lines.append(f"  highest rate sustained (req/s): {rates}")
        regimes = ", ".join(f"{label} {regime(run).name}" for label, run in study.section)
        lines.append(f"  at {study.section_rate:.2f} req/s: {regimes}")
    return lines
