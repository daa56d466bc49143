"""`kvharness run`, the main job, on a few requests of the bundled traces."""
from __future__ import annotations

import json

import pytest

from harness.cli import build_parser, main
from harness.cli.run import DEFAULT_ALLOCATORS, DEFAULT_TRACES, plan_jobs

pypdf = pytest.importorskip("pypdf")


def test_no_arguments_means_the_main_job():
    args = build_parser().parse_args(["run"])
    assert args.traces == DEFAULT_TRACES and args.allocators == DEFAULT_ALLOCATORS
    jobs = plan_jobs(args)
    main_runs = [job for job in jobs if not job.ablation]
    assert len(main_runs) == len(DEFAULT_TRACES) * len(DEFAULT_ALLOCATORS)
    ablation = [job for job in jobs if job.ablation]
    assert {job.trace_name for job in ablation} == {"mooncake-conv"}
    assert all(job.allocator == "paged" for job in ablation)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_run_writes_runs_and_report(tmp_path, capsys, jobs):
    out_pdf = tmp_path / "report.pdf"
    code = main(["run", "--requests", "12", "--allocators", "static,paged",
                 "--traces", "azure-conv,mooncake-conv", "--block-sizes", "64",
                 "--jobs", jobs, "--out-dir", str(tmp_path / "runs"), "-o", str(out_pdf),
                 "--results-dir", str(tmp_path / "absent"), "--no-progress"])
    assert code == 0
    run_dirs = sorted(p.parent.relative_to(tmp_path / "runs").as_posix()
                      for p in (tmp_path / "runs").glob("*/*/run.json"))
    assert run_dirs == ["azure-conv/paged", "azure-conv/static", "mooncake-conv/paged",
                        "mooncake-conv/paged-bs64", "mooncake-conv/static"]
    meta = json.loads((tmp_path / "runs/mooncake-conv/paged-bs64/run.json").read_text())
    assert meta["summary"]["requests"] == 12
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(out_pdf).pages)
    assert "mooncake-conv: KV memory utilization over time" in text
    assert "paged bs=64" in text  # listed among the ablation runs on the title page
    assert f"wrote {out_pdf}" in capsys.readouterr().out


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
