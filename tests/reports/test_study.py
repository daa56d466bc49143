"""The study view of runs: load regimes, capacity curves, sustained rates under an SLO, and the
measured tables made readable."""
from __future__ import annotations

import pandas as pd
import pytest

from reports.build import build_report
from reports.load import load_run
from reports.measured_pages import paired_figures, readable
from reports.regime import Slo, offered_rate, regime, sustained_rate
from reports.study import trace_studies


def _curve_runs(make_run, tmp_path, facts, rates=(1.0, 2.0, 4.0)):
    dirs = [make_run(tmp_path / f"{name}-x{rate:g}", allocator=name, rate_scale=rate, seed=i)
            for i, name in enumerate(("static", "paged")) for rate in rates]
    return dirs, trace_studies([load_run(path) for path in dirs], facts)


def test_runs_of_one_slice_at_several_rates_make_a_curve(make_run, tmp_path, facts):
    _, studies = _curve_runs(make_run, tmp_path, facts)
    (study,) = studies
    assert study.has_curve and set(study.curve) == {"static", "paged"}
    rates = sorted(study.curve["paged"])
    assert len(rates) == 3 and rates[1] / rates[0] == pytest.approx(2.0, rel=1e-3)
    assert study.section_rate in rates


def test_sustained_rate_stops_at_the_first_rate_that_misses_the_slo(make_run, tmp_path, facts):
    _, (study,) = _curve_runs(make_run, tmp_path, facts)
    points = study.curve["static"]
    loose = Slo(ttft_p99_s=1e9, normalized_latency_s=1e9)
    assert sustained_rate(points, loose) == max(points)
    assert sustained_rate(points, Slo(ttft_p99_s=1e-9, normalized_latency_s=1e9)) == 0.0


def test_a_queue_that_grows_past_the_last_arrival_is_overloaded(make_run, tmp_path):
    run = load_run(make_run(tmp_path / "r"))
    assert offered_rate(run) > 0
    run.steps["waiting"] = len(run.requests)  # everyone still waiting at every step
    assert regime(run).name == "overloaded"
    run.steps["waiting"] = 0
    run.steps["live"] = run.steps["budget"]  # KV full, queue empty: memory presses
    assert regime(run).name == "pressed"
    run.steps["live"] = 0
    run.steps["reserved"] = run.steps["internal"] = 0
    assert regime(run).name == "idle"


def test_the_report_has_capacity_pages_and_states_each_regime(make_run, tmp_path, facts):
    dirs, _ = _curve_runs(make_run, tmp_path, facts)
    titles = build_report(dirs, tmp_path / "r.pdf", results_dir=tmp_path / "none",
                          allocators=facts)
    assert "azure-conv: capacity curves (latency against request rate)" in titles
    assert any(title.startswith("Sustained request rate") for title in titles)
    for page in ("external fragmentation over time", "admissions, rejections and preemptions",
                 "throughput against utilization"):
        assert f"azure-conv: {page}" in " ".join(titles)


def test_measured_tables_are_cut_to_what_varies_and_pair_measured_with_simulated():
    table = pd.DataFrame({"allocator": ["static", "paged"], "requests": [300, 300],
                          "utilization_measured": [0.35, 0.34],
                          "utilization_simulated": [0.30, 0.30],
                          **{f"extra_{i}": [i, i + 1] for i in range(10)}})
    assert paired_figures(table) == ["utilization"]
    shown, said = readable(table, keep=["allocator", "utilization_measured"])
    assert list(shown.columns[:2]) == ["allocator", "utilization_measured"]
    assert len(shown.columns) == 8 and "requests" not in shown
    assert "requests = 300" in said and "not shown: " in said
