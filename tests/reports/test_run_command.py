"""`kvharness run`, the main job, on a few requests of the bundled traces."""
from __future__ import annotations

import json

import pytest

from harness.cli import build_parser, main
from harness.cli.run import DEFAULT_ALLOCATORS, DEFAULT_TRACES, TRACE_RATES, plan_jobs

pypdf = pytest.importorskip("pypdf")


def test_the_main_job_is_a_capacity_study():
    args = build_parser().parse_args(["run"])
    assert args.traces == DEFAULT_TRACES and args.allocators == DEFAULT_ALLOCATORS
    jobs = plan_jobs(args)
    main_runs = [job for job in jobs if not job.ablation and job.kv_dtype == args.kv_dtype]
    # every allocator, static also as its oracle, at every rate of each trace's curve
    per_rate = len(DEFAULT_ALLOCATORS) + 1
    assert len(main_runs) == per_rate * sum(len(TRACE_RATES[t]) for t in DEFAULT_TRACES)
    assert sum(dict(job.params).get("oracle", False) for job in main_runs) == 10
    assert {job.model for job in main_runs if job.trace_name == "mooncake-conv"} == {
        "llama3.1-8b"}
    ablation = [job for job in jobs if job.ablation]
    assert {job.trace_name for job in ablation} == {"mooncake-conv"}
    assert all(job.allocator == "paged" for job in ablation)
    assert len({job.rate for job in ablation}) == 1
    # paged's curve on the ablation trace again with fp8 KV, kept apart from the study's runs
    fp8 = [job for job in jobs if job.kv_dtype != args.kv_dtype]
    assert args.kv_dtype == "bf16" and {job.kv_dtype for job in fp8} == {"fp8"}
    assert {(job.trace_name, job.allocator) for job in fp8} == {("mooncake-conv", "paged")}
    assert sorted(job.rate for job in fp8) == sorted(TRACE_RATES["mooncake-conv"])
    assert not any(job.ablation for job in fp8)


def test_the_main_job_in_fp8_compares_against_bf16():
    args = build_parser().parse_args(["run", "--kv-dtype", "fp8"])
    kv_dtypes = {job.kv_dtype for job in plan_jobs(args) if job.allocator == "static"}
    assert kv_dtypes == {"fp8"}
    assert {job.out_dir.name for job in plan_jobs(args) if job.kv_dtype == "bf16"} == {
        "paged-bf16"}


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_run_writes_runs_and_report(tmp_path, capsys, jobs):
    out_pdf = tmp_path / "report.pdf"
    code = main(["run", "--requests", "12", "--allocators", "static,paged",
                 "--traces", "azure-conv,mooncake-conv", "--block-sizes", "64",
                 "--rates", "1,4", "--jobs", jobs, "--out-dir", str(tmp_path / "runs"),
                 "-o", str(out_pdf), "--results-dir", str(tmp_path / "absent"),
                 "--no-progress"])
    assert code == 0
    run_dirs = sorted(p.parent.relative_to(tmp_path / "runs").as_posix()
                      for p in (tmp_path / "runs").glob("*/*/*/run.json"))
    assert run_dirs == sorted([f"{trace}/x{rate}/{run}"
                               for trace in ("azure-conv", "mooncake-conv") for rate in (1, 4)
                               for run in ("paged", "static", "static-oracle")]
                              + ["mooncake-conv/x1/paged-bs64", "mooncake-conv/x1/paged-fp8",
                                 "mooncake-conv/x4/paged-fp8"])
    meta = json.loads((tmp_path / "runs/mooncake-conv/x1/paged-bs64/run.json").read_text())
    assert meta["summary"]["requests"] == 12
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(out_pdf).pages)
    assert "mooncake-conv: KV memory utilization over time" in text
    assert "capacity curves" in text and "static oracle" in text
    assert "paged bs=64" in text  # listed among the ablation runs on the title page
    assert "mooncake-conv: paged with fp8 against bf16 KV (simulated)" in text
    out = capsys.readouterr().out
    assert f"wrote {out_pdf}" in out and "highest rate sustained" in out


def test_report_rebuilds_the_study_from_saved_runs(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["run", "--requests", "12", "--allocators", "paged", "--traces",
                 "azure-conv", "--rates", "1,2", "--out-dir", str(runs), "-o",
                 str(tmp_path / "a.pdf"), "--results-dir", str(tmp_path / "absent"),
                 "--no-progress", "--jobs", "1"]) == 0
    dirs = [str(p.parent) for p in sorted(runs.glob("*/*/*/run.json"))]
    assert main(["report", *dirs, "-o", str(tmp_path / "b.pdf"),
                 "--results-dir", str(tmp_path / "absent")]) == 0
    pages = [page.extract_text() for page in pypdf.PdfReader(tmp_path / "b.pdf").pages]
    assert any("azure-conv: capacity curves" in text for text in pages)


def test_unknown_trace_is_a_clear_error(tmp_path, capsys):
    code = main(["run", "--traces", "no-such-trace", "--out-dir", str(tmp_path),
                 "-o", str(tmp_path / "r.pdf"), "--no-progress"])
    assert code == 2
    assert "no-such-trace" in capsys.readouterr().err


def test_unknown_allocator_is_a_clear_error(tmp_path, capsys):
    code = main(["run", "--allocators", "paged,buddy", "--out-dir", str(tmp_path),
                 "-o", str(tmp_path / "r.pdf"), "--no-progress"])
    assert code == 2
    assert "buddy" in capsys.readouterr().err
