"""Reading run directories: the contract's files and columns, labels, time weighting."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reports.load import RunDirError, group_by_trace, load_run, run_labels, time_weighted_mean
from reports.schema import write_table


def test_load_run_reads_the_contract_files(make_run, tmp_path):
    run = load_run(make_run(tmp_path / "r", allocator="static", trace="mooncake-conv"))
    assert run.allocator == "static"
    assert run.trace_name == "mooncake-conv"
    assert run.num_requests == 60
    assert run.status_counts() == {"completed": 60}
    assert 0.25 < run.figure("utilization_mean") < 0.35


def test_waste_shares_sum_to_one(make_run, tmp_path):
    shares = load_run(make_run(tmp_path / "r", allocator="static")).waste_shares()
    assert set(shares) == {"live", "reserved", "internal", "external", "cached", "stale", "free"}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["reserved"] > 0.5


def test_empty_run_has_nan_figures(make_run, tmp_path):
    run = load_run(make_run(tmp_path / "r", num_requests=0))
    assert run.steps.empty and run.requests.empty
    assert np.isnan(run.figure("utilization_mean"))
    assert all(np.isnan(v) for v in run.waste_shares().values())


@pytest.mark.parametrize("missing", ["steps.parquet", "requests.parquet", "run.json"])
def test_missing_file_names_it(make_run, tmp_path, missing):
    path = make_run(tmp_path / "r")
    (path / missing).unlink()
    with pytest.raises(RunDirError, match=missing):
        load_run(path)


def test_missing_column_names_it(make_run, tmp_path):
    path = make_run(tmp_path / "r")
    steps = pd.read_parquet(path / "steps.parquet").drop(columns=["largest_free_run"])
    write_table(steps, path / "steps.parquet")
    with pytest.raises(RunDirError, match="largest_free_run"):
        load_run(path)


def test_bad_json_and_non_directory_are_run_dir_errors(make_run, tmp_path):
    path = make_run(tmp_path / "r")
    (path / "run.json").write_text("{not json")
    with pytest.raises(RunDirError, match="run.json"):
        load_run(path)
    with pytest.raises(RunDirError, match="not a directory"):
        load_run(tmp_path / "nowhere")


def test_params_as_mapping_or_pairs(make_run, tmp_path):
    path = make_run(tmp_path / "r", block_size=32)
    assert load_run(path).block_size == 32
    meta = json.loads((path / "run.json").read_text())
    meta["config"]["allocator"]["params"] = {"block_size": 64}
    (path / "run.json").write_text(json.dumps(meta))
    assert load_run(path).block_size == 64


def test_labels_tell_block_sizes_apart(make_run, tmp_path, facts):
    runs = [load_run(make_run(tmp_path / "a", allocator="static")),
            load_run(make_run(tmp_path / "b", block_size=16)),
            load_run(make_run(tmp_path / "c", block_size=64)),
            load_run(make_run(tmp_path / "d"))]
    assert run_labels(runs, facts) == ["static", "paged bs=16", "paged bs=64", "paged bs=default"]
    assert run_labels(runs)[1] == "paged block_size=16"  # no facts: the parameter's own name


def test_duplicate_runs_get_their_directory_in_the_label(make_run, tmp_path):
    runs = [load_run(make_run(tmp_path / "one")), load_run(make_run(tmp_path / "two"))]
    assert run_labels(runs) == ["paged (one)", "paged (two)"]


def test_group_by_trace_orders_allocators(make_run, tmp_path, facts):
    runs = [load_run(make_run(tmp_path / name, allocator=name, trace=trace))
            for trace in ("b-trace", "a-trace") for name in ("hybrid", "static", "paged")]
    groups = group_by_trace(runs, facts)
    assert list(groups) == ["b-trace", "a-trace"]
    assert [run.allocator for run in groups["a-trace"]] == ["static", "paged", "hybrid"]


def test_time_weighted_mean_weights_by_step_duration():
    steps = pd.DataFrame({"step_ms": [1.0, 3.0], "running": [10, 2]})
    assert time_weighted_mean(steps, "running") == pytest.approx(4.0)
    steps["step_ms"] = 0.0
    assert time_weighted_mean(steps, "running") == pytest.approx(6.0)


def test_a_table_that_is_not_parquet_is_a_run_dir_error(make_run, tmp_path):
    path = make_run(tmp_path / "r")
    (path / "steps.parquet").write_text("step,time_s\n0,0.0\n")
    with pytest.raises(RunDirError, match="steps.parquet: not a Parquet table"):
        load_run(path)
