"""The decode-balance benchmark's verdict on its table: auto, the default, is held to the rules
(at most 5% slower than the executor's launch anywhere, 1.3x faster on skewed cases, outputs
near the reference); balanced alone is reported beside it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_decode_balance import verdict  # noqa: E402


def _rows(uniform_us: dict[str, float], skewed_us: dict[str, float], err: float = 1e-3):
    return [dict(batch=32, kind=kind, context=1000, table_tokens=16384, impl=impl,
                 median_us=us, rel_err=err)
            for kind, times in (("uniform", uniform_us), ("skewed", skewed_us))
            for impl, us in times.items()]


def test_auto_is_borne_out_where_it_picks_the_faster_launch():
    rows = _rows({"executor": 48.0, "balanced": 51.0, "auto": 48.0},
                 {"executor": 197.0, "balanced": 58.0, "auto": 58.0})
    met, lines = verdict(rows)
    assert met
    assert lines[0].startswith("met: auto at worst 1.000x")
    assert lines[2].startswith("MISSED: balanced at worst 1.062x")


@pytest.mark.parametrize("uniform_auto, skewed_auto, err", [
    (51.0, 58.0, 1e-3),    # auto ran balanced on a uniform batch: 6% slower
    (48.0, 190.0, 1e-3),   # auto kept the split launch on the skewed batch
    (48.0, 58.0, 0.05),    # outputs off the reference
])
def test_auto_is_not_borne_out_when_a_rule_fails(uniform_auto, skewed_auto, err):
    rows = _rows({"executor": 48.0, "balanced": 51.0, "auto": uniform_auto},
                 {"executor": 197.0, "balanced": 58.0, "auto": skewed_auto}, err)
    met, _ = verdict(rows)
    assert not met
