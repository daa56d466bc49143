"""`kvharness trace info`: cheap to import, prints the summary, reports bad input on stderr."""
from __future__ import annotations

import subprocess
import sys

from harness.cli import main as cli


def test_the_subcommand_module_imports_cheaply():
    code = (
        "import sys, harness.cli.trace; "
        "heavy = {'pandas', 'numpy', 'workloads'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_info_of_a_generated_file(write, capsys):
    path = write(
        "burst.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "0,ChatGPT,100,10,110,API log\n"
        "2,ChatGPT,300,0,300,API log\n",
    )
    assert cli(["trace", "info", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"trace    burst (burstgpt, {path})"
    assert out[1:] == [
        "rows     2",
        "span     2.0 s",
        "rate     1.00 req/s",
        "prompt   mean 200  median 200  p99 298  max 300  min 100",
        "output   mean 5  median 5  p99 10  max 10  min 0",
        "failed   1",
        "prefix   no prefix hashes",
        "skipped  0 invalid rows",
    ]


def test_skipped_rows_beyond_ten_are_summarised(write, capsys):
    rows = "".join(f"{t},ChatGPT,{-1 if t % 2 else 5},1,1,API log\n" for t in range(30))
    path = write("burst.csv", "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n" + rows)
    assert cli(["trace", "info", str(path), "--skip-invalid"]) == 0
    out = capsys.readouterr().out
    assert "rows     15" in out and "skipped  15 invalid rows" in out
    assert "line 3: Request tokens: must be >= 1" in out
    assert "... and 5 more" in out


def test_a_missing_trace_is_an_error(capsys):
    assert cli(["trace", "info", "no-such-trace"]) == 2
    assert "no trace file 'no-such-trace'" in capsys.readouterr().err
