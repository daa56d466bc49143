"""The verdict's winners and its reasons, computed from the runs' numbers."""
from __future__ import annotations

from reports.load import AllocatorFacts, load_run
from reports.verdict import overall_line, run_notes, trace_verdict

RESERVING = AllocatorFacts(reservations={"static": "max_model_len"})


def _verdict(runs):
    return trace_verdict("azure-conv", [(run.allocator, run) for run in runs], RESERVING)


def test_winners_and_reasons(make_run, tmp_path):
    runs = [load_run(make_run(tmp_path / name, allocator=name))
            for name in ("static", "paged", "segmented")]
    verdict = _verdict(runs)
    by_metric = {finding.metric: finding for finding in verdict.findings}
    assert set(by_metric) == {"utilization", "admitted concurrency", "throughput", "TTFT p99"}
    utilization = by_metric["utilization"]
    assert utilization.winners == ("segmented",)
    static_reason = next(s for s in utilization.why if s.startswith("static"))
    assert "reserves max_model_len up front" in static_reason
    assert "reserved-not-written" in static_reason
    # static's synthetic latencies are three times slower: it loses TTFT p99.
    assert "static" not in by_metric["TTFT p99"].winners
    assert verdict.notes == ()
    assert verdict.winners_text(utilization) == "segmented"
    assert overall_line(verdict).startswith("azure-conv: best or tied-best on ")


def test_static_with_max_model_len_says_so(make_run, tmp_path):
    path = make_run(tmp_path / "s", allocator="static")
    run = load_run(path)
    run.meta["config"]["allocator"]["params"] = [["max_model_len", 8192]]
    paged = load_run(make_run(tmp_path / "p"))
    finding = _verdict([run, paged]).findings[0]
    assert "reserves max_model_len up front" in " ".join(finding.why)


def test_identical_runs_tie(make_run, tmp_path):
    runs = [load_run(make_run(tmp_path / name, seed=3)) for name in ("a", "b")]
    labelled = [("paged a", runs[0]), ("paged b", runs[1])]
    verdict = trace_verdict("t", labelled)
    assert all(finding.winners == ("paged a", "paged b") for finding in verdict.findings)
    assert overall_line(verdict) == "t: every allocator ties on every question."
    assert verdict.winners_text(verdict.findings[0]) == "all 2 tie"
    throughput = next(f for f in verdict.findings if f.metric == "throughput")
    assert "arrival rate" in throughput.why[0]


def test_empty_and_rejected_runs_are_noted_not_judged(make_run, tmp_path):
    empty = load_run(make_run(tmp_path / "e", num_requests=0))
    rejected = load_run(make_run(tmp_path / "r", allocator="static", num_requests=5,
                                 status="rejected"))
    verdict = _verdict([empty, rejected])
    assert verdict.findings == ()
    assert "empty run" in verdict.notes[0]
    assert "all 5 requests were rejected" in verdict.notes[1]
    assert "prompt exceeds the KV budget" in verdict.notes[1]
    assert overall_line(verdict) == (
        "azure-conv: fewer than two runs produced numbers to compare.")


def test_single_request_is_noted(make_run, tmp_path):
    run = load_run(make_run(tmp_path / "one", num_requests=1))
    assert any("only one request" in note for note in run_notes("paged", run))
    other = load_run(make_run(tmp_path / "static", allocator="static"))
    assert len(_verdict([run, other]).findings) == 4


def test_a_lone_run_is_not_declared_a_winner(make_run, tmp_path):
    verdict = _verdict([load_run(make_run(tmp_path / "p"))])
    assert verdict.findings == ()
    assert "only run that admitted requests" in verdict.notes[-1]


def test_a_run_that_admitted_nothing_does_not_compete(make_run, tmp_path):
    rejected = load_run(make_run(tmp_path / "r", allocator="static", num_requests=3,
                                 status="rejected"))
    verdict = _verdict([rejected, load_run(make_run(tmp_path / "p"))])
    assert verdict.findings == () and verdict.labels == ("paged",)
    assert "all 3 requests were rejected" in verdict.notes[0]


def test_the_oracle_is_labelled_and_said_to_reserve_the_actual_output(make_run, tmp_path, facts):
    from reports.load import run_labels

    oracle = load_run(make_run(tmp_path / "o", allocator="static"))
    oracle.meta["config"]["allocator"]["params"] = {"oracle": True}
    plain = load_run(make_run(tmp_path / "s", allocator="static"))
    paged = load_run(make_run(tmp_path / "p"))
    assert run_labels([oracle, plain, paged], facts) == ["static oracle", "static", "paged"]
    finding = trace_verdict("t", [("static oracle", oracle), ("paged", paged)], facts).findings[0]
    assert "reserves prompt + actual output (an oracle) up front" in " ".join(finding.why)
