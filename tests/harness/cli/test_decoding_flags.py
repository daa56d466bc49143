"""--n, --beam-width, --spec-tokens and --spec-accept reach the trace spec a run records, and a
recorded run replays the same way."""
from __future__ import annotations

import json

import pytest

from harness.cli import main


@pytest.mark.parametrize("flags, recorded", [
    (["--beam-width", "3"], {"beam_width": 3}),
    (["--spec-tokens", "2", "--spec-accept", "0.5"], {"spec_tokens": 2, "spec_accept": 0.5}),
    (["--n", "2"], {"n": 2}),
])
def test_decoding_flags_are_recorded_and_replayed(tmp_path, flags, recorded):
    out = tmp_path / "run"
    assert main(["simulate", "--trace", "azure-conv", "--requests", "20", "--allocator",
                 "paged", "--out", str(out), "--no-progress", *flags]) == 0
    spec = json.loads((out / "run.json").read_text())["trace"]["spec"]
    assert {k: spec[k] for k in recorded} == recorded
    again = tmp_path / "again"
    assert main(["simulate", "--from", str(out / "run.json"), "--out", str(again),
                 "--no-progress"]) == 0
    assert (again / "steps.parquet").read_bytes() == (out / "steps.parquet").read_bytes()


def test_beam_search_with_speculation_is_refused(tmp_path, capsys):
    assert main(["simulate", "--trace", "azure-conv", "--requests", "5", "--out",
                 str(tmp_path / "x"), "--beam-width", "2", "--spec-tokens", "2"]) == 2
    assert "not modelled" in capsys.readouterr().err
