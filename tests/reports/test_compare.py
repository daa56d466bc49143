"""benchmarks/compare.py, the benchmark regression gate (it sits outside the packages, so it is
loaded from its path)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("benchmarks_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench_json(path: Path, medians: dict[str, float]) -> Path:
    path.write_text(json.dumps({"benchmarks": [
        {"name": name.split("::")[-1], "fullname": name, "stats": {"median": median}}
        for name, median in medians.items()]}))
    return path


def test_update_then_check_passes(compare, tmp_path, capsys):
    runs = [_bench_json(tmp_path / f"{i}.json", {"t::a": 1e-3 * (1 + i / 10), "t::b": 2e-6})
            for i in range(3)]
    baseline = tmp_path / "baseline.json"
    assert compare.main([*map(str, runs), "--update", "--baseline", str(baseline)]) == 0
    assert json.loads(baseline.read_text()) == {"t::a": pytest.approx(1.1e-3), "t::b": 2e-6}
    assert compare.main([str(runs[2]), "--baseline", str(baseline)]) == 0


def test_regression_beyond_threshold_fails(compare, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    same = {f"t::same{i}": 1e-3 for i in range(3)}  # the machine factor stays 1
    baseline.write_text(json.dumps({"t::a": 1e-3, "t::b": 1e-3, "t::gone": 1e-3, **same}))
    slower = 1 + compare.THRESHOLD
    run = _bench_json(tmp_path / "run.json", {"t::a": 0.95 * slower * 1e-3,
                                              "t::b": 1.05 * slower * 1e-3, "t::new": 1.0,
                                              **same})
    assert compare.main([str(run), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED  t::b" in out and "ok         t::a" in out
    assert "new        t::new" in out and "missing    t::gone" in out
    looser = str(compare.THRESHOLD + 0.2)
    assert compare.main([str(run), "--baseline", str(baseline), "--threshold", looser]) == 0


def test_the_machine_factor_is_scaled_out_up_to_its_limit(compare, tmp_path, capsys):
    """Every ratio divided by their median: a machine three times slower passes, one benchmark
    slowed beyond the threshold on it fails, and a machine factor over MACHINE_LIMIT fails."""
    names = [f"t::{i}" for i in range(5)]
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({name: 1e-3 for name in names}))
    slow = {name: 3e-3 * (1 + i / 20) for i, name in enumerate(names)}
    assert compare.main([str(_bench_json(tmp_path / "slow.json", slow)),
                         "--baseline", str(baseline)]) == 0
    assert "3.30x; every ratio" in capsys.readouterr().out
    slow["t::4"] = 3e-3 * 1.1 * (compare.THRESHOLD + 1.1)
    assert compare.main([str(_bench_json(tmp_path / "one.json", slow)),
                         "--baseline", str(baseline)]) == 1
    assert "REGRESSED  t::4" in capsys.readouterr().out
    slower = {name: 1.01e-3 * compare.MACHINE_LIMIT for name in names}
    assert compare.main([str(_bench_json(tmp_path / "all.json", slower)),
                         "--baseline", str(baseline)]) == 1
    assert capsys.readouterr().out.startswith("REGRESSED  median")


def test_a_regression_must_show_in_every_run_given(compare, tmp_path):
    same = {f"t::same{i}": 1e-3 for i in range(3)}
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"t::a": 1e-3, **same}))
    slow = _bench_json(tmp_path / "slow.json", {"t::a": 3e-3, **same})
    usual = _bench_json(tmp_path / "usual.json", {"t::a": 1.1e-3, **same})
    slow_again = _bench_json(tmp_path / "again.json", {"t::a": 2.8e-3, **same})
    assert compare.main([str(slow), "--baseline", str(baseline)]) == 1
    assert compare.main([str(slow), str(usual), "--baseline", str(baseline)]) == 0
    assert compare.main([str(slow), str(slow_again), "--baseline", str(baseline)]) == 1


def test_faster_is_fine(compare, tmp_path):
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"t::a": 1.0}))
    run = _bench_json(tmp_path / "run.json", {"t::a": 0.01})
    assert compare.main([str(run), "--baseline", str(baseline)]) == 0


def test_spread_reports_the_worst_ratio(compare, tmp_path, capsys):
    runs = [_bench_json(tmp_path / f"{i}.json", {"t::a": m}) for i, m in enumerate((1.0, 1.3))]
    assert compare.main([*map(str, runs), "--spread"]) == 0
    assert "worst max/min: 1.30x" in capsys.readouterr().out


def test_unreadable_files_exit_2(compare, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert compare.main([str(bad)]) == 2
    assert "not a pytest-benchmark JSON" in capsys.readouterr().err
