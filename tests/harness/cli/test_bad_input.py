"""Bad input ends in one line on stderr and exit status 2, before anything runs; a closed stdout
ends quietly. Issue 15."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import workloads
from harness.cli import main

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
AZURE_ROWS = [
    "2023-11-16 18:15:46.6805900,374,44\n",
    "2023-11-16 18:15:50.9951690,-396,109\n",  # line 3: a negative prompt length
    "2023-11-16 18:15:51.2224670,879,55\n",
]

SIMULATE = ["simulate", "--trace", "azure-conv", "--out", "{out}", "--no-progress"]
RUN = ["run", "--out-dir", "{out}", "--no-progress"]
SWEEP = ["sweep", "grid.toml", "--out", "{out}"]
GPU = ["gpu", "--out", "{out}", "--no-progress"]
PLAN = ["plan"]
TRACE = ["trace", "info", "azure-conv"]
REPORT = ["report", "{out}"]

BAD_NUMBERS = [
    (SIMULATE, "--rate-scale", "0"),
    (SIMULATE, "--rate-scale", "-1"),
    (SIMULATE, "--rate-scale", "nan"),
    (SIMULATE, "--rate-scale", "inf"),
    (SIMULATE, "--requests", "-1"),
    (SIMULATE, "--requests", "0"),
    (SIMULATE, "--requests", "2.5"),
    (SIMULATE, "--horizon-s", "0"),
    (SIMULATE, "--horizon-s", "-5"),
    (SIMULATE, "--budget-slots", "0"),
    (SIMULATE, "--block-size", "0"),
    (SIMULATE, "--tp", "0"),
    (SIMULATE, "--gpu-memory-utilization", "0"),
    (SIMULATE, "--gpu-memory-utilization", "1.5"),
    (SIMULATE, "--gpu-memory-utilization", "nan"),
    (SIMULATE, "--max-num-seqs", "0"),
    (SIMULATE, "--max-num-batched-tokens", "-8"),
    (SIMULATE, "--swap-space-gib", "-1"),
    (SIMULATE, "--swap-space-gib", "nan"),
    (SIMULATE, "--cpu-cache-gib", "-1"),
    (GPU, "--cpu-cache-gib", "inf"),
    (SIMULATE, "--max-model-len", "0"),
    (SIMULATE, "--seed", "-1"),
    (RUN, "--requests", "0"),
    (RUN, "--requests", "-1"),
    (RUN, "--jobs", "0"),
    (RUN, "--seed", "-1"),
    (RUN, "--block-sizes", "8,0"),
    (SWEEP, "--workers", "0"),
    (SWEEP, "--limit", "0"),
    (GPU, "--requests", "0"),
    (GPU, "--start", "-1"),
    (GPU, "--rate-scale", "nan"),
    (GPU, "--max-model-len", "1"),
    (GPU, "--budget-slots", "0"),
    (GPU, "--seed", "-1"),
    (PLAN, "--tp", "0"),
    (PLAN, "--context", "0"),
    (PLAN, "--max-model-len", "-1"),
    (PLAN, "--gpu-memory-utilization", "0"),
    (PLAN, "--block-size", "0"),
    (PLAN, "--block-size", "0"),
    (PLAN, "--max-num-batched-tokens", "0"),
    (TRACE, "--rate-per-s", "0"),
    (TRACE, "--seed", "-1"),
    (REPORT, "--slo-ttft-s", "0"),
]


def _argv(template: list[str], out: Path, *extra: str) -> list[str]:
    return [part.format(out=out) for part in template] + list(extra)


def _one_error_line(err: str, command: str) -> str:
    """The single line a bad input prints (after argparse's usage, if any)."""
    lines = [line for line in err.splitlines() if line.startswith(f"kvharness {command}")]
    assert len(lines) == 1, err
    assert ": error: " in lines[0] and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(("template", "flag", "value"), BAD_NUMBERS,
                         ids=[f"{t[0]} {f} {v}" for t, f, v in BAD_NUMBERS])
def test_a_bad_number_is_a_usage_error_naming_the_flag(tmp_path, capsys, template, flag, value):
    out = tmp_path / "out"
    assert main(_argv(template, out, flag, value)) == 2
    line = _one_error_line(capsys.readouterr().err, template[0])
    assert f"argument {flag}: " in line and repr(value) in line
    assert not out.exists()


@pytest.mark.parametrize(("template", "flag", "value", "named"), [
    (SIMULATE, "--allocator", "paged,paged", "'paged' is listed twice"),
    (SIMULATE, "--allocator", "paged,foo", "unknown allocator 'foo'"),
    (SIMULATE, "--allocator", "", "expected a comma-separated list"),
    (RUN, "--allocators", "static,paged,static", "'static' is listed twice"),
    (RUN, "--allocators", "paged,buddy", "unknown allocator 'buddy'"),
    (RUN, "--traces", "azure-conv,azure-conv", "'azure-conv' is listed twice"),
    (GPU, "--allocator", "paged,foo", "unknown allocator 'foo'"),
    (GPU, "--allocator", "paged,hybrid", "expected one allocator"),
    pytest.param(GPU, "--device", "gpu0", "not a torch device: 'gpu0'",
                 marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                          reason="a torch device needs torch")),
    (SIMULATE, "--format", "csv", "unknown trace format 'csv'"),
    (TRACE, "--format", "csv", "unknown trace format 'csv'"),
])
def test_a_bad_list_is_refused_before_any_run(tmp_path, capsys, template, flag, value, named):
    out = tmp_path / "out"
    assert main(_argv(template, out, flag, value)) == 2
    line = _one_error_line(capsys.readouterr().err, template[0])
    assert f"argument {flag}: {named}" in line
    assert not out.exists()  # nothing ran: the first allocator wrote no run directory


def _trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text(AZURE_HEADER + "".join(AZURE_ROWS))
    return path


def test_errors_of_the_project_are_one_line_and_status_2(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text("colour = 'blue'\n")
    grid = tmp_path / "grid.toml"
    grid.write_text("[grid]\nallocator = 'paged'\n")
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    cases = [
        (["simulate", "--trace", str(_trace_file(tmp_path))], "line 3"),  # TraceError
        (["simulate", "--trace", str(tmp_path / "missing.csv")], "missing.csv"),
        (["simulate", "--trace", "azure-conv", "--config", str(config)], "colour"),  # ConfigError
        (["simulate", "--trace", "azure-conv", "--param", "block_size"], "--param"),
        (["simulate", "--trace", "azure-conv", "--model", "gpt-9"], "gpt-9"),  # PresetError
        (["simulate", "--trace", "azure-conv", "--allocator", "static", "--cpu-cache-gib", "1"],
         "no prefix cache"),
    ]
    for argv, named in cases:
        assert main([*argv, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
        assert named in _one_error_line(capsys.readouterr().err, "simulate")
    # An --out that cannot be a directory: an OSError after the run, still one line.
    assert main(["simulate", "--trace", "azure-conv", "--requests", "3", "--out", str(not_a_dir),
                 "--no-progress"]) == 2
    assert str(not_a_dir) in _one_error_line(capsys.readouterr().err, "simulate")
    assert main(["sweep", str(grid), "--out", str(tmp_path / "sweep")]) == 2  # GridError
    assert "allocator" in _one_error_line(capsys.readouterr().err, "sweep")
    assert main(["sweep", str(tmp_path / "no.toml"), "--out", str(tmp_path / "sweep")]) == 2
    assert "no.toml" in _one_error_line(capsys.readouterr().err, "sweep")
    assert main(["trace", "info", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in _one_error_line(capsys.readouterr().err, "trace")


def test_a_closed_stdout_ends_quietly(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte, as after `| head` has read
    try:
        done = subprocess.run([sys.executable, "-m", "harness.cli", "plan", "--json"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 1 and done.stderr == ""


def test_skip_invalid_and_format_reach_the_loader(tmp_path, capsys):
    path = _trace_file(tmp_path)
    out = tmp_path / "run"
    argv = ["simulate", "--trace", str(path), "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    assert "line 3" in capsys.readouterr().err
    assert main([*argv, "--skip-invalid", "--format", "azure"]) == 0
    assert json.loads((out / "run.json").read_text())["trace"]["rows"] == 2
    assert main([*argv, "--format", "mooncake"]) == 2  # read as JSON lines, it is not a trace
    assert str(path) in _one_error_line(capsys.readouterr().err, "simulate")


def test_run_passes_the_trace_flags_and_slices_the_traces(monkeypatch, make_trace):
    from harness.cli import build_parser
    from harness.cli.run import DEFAULT_REQUESTS, _load_traces

    calls = []
    monkeypatch.setattr(workloads.load, "load_trace",
                        lambda name, **kwargs: calls.append((name, kwargs))
                        or make_trace([10, 20, 30], [1, 2, 3], name=name))
    args = build_parser().parse_args(["run", "--traces", "a,b", "--skip-invalid"])
    assert args.requests == DEFAULT_REQUESTS
    traces = _load_traces(args)
    assert calls == [("a", {"format": None, "skip_invalid": True}),
                     ("b", {"format": None, "skip_invalid": True})]
    assert {name: len(trace) for name, trace in traces.items()} == {"a": 3, "b": 3}
    args = build_parser().parse_args(["run", "--traces", "a", "--requests", "2",
                                      "--format", "azure"])
    assert len(_load_traces(args)["a"]) == 2
    assert calls[-1] == ("a", {"format": "azure", "skip_invalid": False})

