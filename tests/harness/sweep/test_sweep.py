"""Sweeps: grid expansion, stable cell hashes, resumable atomic results, local vs Dask."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.sweep.grid import Grid, GridError, expand
from harness.sweep.runner import DaskExecutor, LocalExecutor, run_sweep
from reports.schema import RESULTS_CSV, SUMMARY_KEYS

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "sweeps"
GRID = {
    "base": {"model": "tiny", "allocator": {"name": "paged", "block_size": 16}},
    "trace": {"source": "azure-conv", "max_requests": 8},
    "grid": {
        "allocator": ["static", "paged", "segmented", "hybrid"],
        "block_size": [8, 32],
        "rate_scale": [1, 4],
    },
}


def fake_cell(cell) -> dict[str, bytes]:
    """A cell function with no engine: a summary that depends on the cell's config."""
    block_size = cell.config.allocator.kwargs.get("block_size", 1)
    summary = dict.fromkeys(SUMMARY_KEYS, 0)
    summary.update(utilization_mean=1 / (1 + block_size / 64), peak_running=100 // block_size,
                   ttft_p99_s=0.5 * cell.trace.rate_scale)
    run = {"config": cell.config.to_dict(), "summary": summary}
    return {"run.json": json.dumps(run, sort_keys=True).encode(), "steps.parquet": b"step\n0\n"}


def crash_once(marker_dir: Path, cell) -> dict[str, bytes]:
    """Fails the second cell the first time it runs, as a killed worker would."""
    marker = marker_dir / cell.config_hash
    if cell.index == 1 and not marker.exists():
        marker.touch()
        raise RuntimeError("worker lost")
    return fake_cell(cell)


def fail_block_size_32(cell) -> dict[str, bytes]:
    if cell.config.allocator.kwargs.get("block_size") == 32:
        raise ValueError("block_size 32 is not\nsupported here")
    return fake_cell(cell)


def _sweep(out: Path, fn=fake_cell, executor=None, **kwargs):
    grid = Grid.from_dict(GRID)
    return run_sweep(grid, expand(grid), out, executor or LocalExecutor(1), cell_fn=fn,
                     progress=False, log=lambda line: None, **kwargs)


def test_expand_skips_params_an_allocator_does_not_take():
    cells = expand(Grid.from_dict(GRID))
    # static, segmented: 2 rate scales each; paged, hybrid: 2 block sizes x 2 rate scales
    assert len(cells) == 2 + 4 + 2 + 4
    assert len({cell.config_hash for cell in cells}) == len(cells)
    assert [cell.index for cell in cells] == list(range(len(cells)))
    static = [cell for cell in cells if cell.config.allocator.name == "static"]
    # the base block_size is dropped too, not only the grid's
    assert all(cell.config.allocator.params == () for cell in static)
    assert [cell.axes for cell in static] == [
        (("allocator", "static"), ("rate_scale", 1)), (("allocator", "static"), ("rate_scale", 4))
    ]


@settings(max_examples=25, deadline=None)
@given(
    allocators=st.lists(st.sampled_from(["static", "paged", "segmented", "hybrid"]), min_size=1,
                        max_size=4, unique=True),
    block_sizes=st.lists(st.sampled_from([1, 2, 16, 256]), min_size=1, max_size=3, unique=True),
    segments=st.lists(st.sampled_from([1024, 65536]), min_size=1, max_size=2, unique=True),
)
def test_each_allocator_multiplies_only_its_own_params(allocators, block_sizes, segments):
    grid = Grid.from_dict({"grid": {"block_size": block_sizes, "allocator": allocators,
                                    "segment_tokens": segments}})
    takes = {"static": 1, "paged": len(block_sizes), "segmented": len(segments),
             "hybrid": len(block_sizes) * len(segments)}
    cells = expand(grid)
    assert len(cells) == sum(takes[name] for name in allocators)
    assert len({cell.config_hash for cell in cells}) == len(cells)


def test_grid_keys_reach_config_and_trace():
    grid = Grid.from_dict({
        "base": {"model": "tiny"},
        "grid": {"scheduler.max_num_seqs": [4, 8], "trace": ["mooncake-conv"],
                 "max_requests": [5], "gpu_memory_utilization": [0.5]},
    })
    cells = expand(grid)
    assert [cell.config.scheduler.max_num_seqs for cell in cells] == [4, 8]
    assert {cell.trace.source for cell in cells} == {"mooncake-conv"}
    assert {cell.trace.max_requests for cell in cells} == {5}
    assert {cell.config.gpu_memory_utilization for cell in cells} == {0.5}
    assert cells[1].columns()["scheduler.max_num_seqs"] == 8


def test_config_hash_ignores_how_the_config_is_written():
    a = Grid.from_dict({"base": {"model": "tiny", "allocator": {"name": "paged", "block_size": 8}}})
    b = Grid.from_dict({
        "base": {"model": {"preset": "tiny"}, "allocator": {"params": {"block_size": 8}}},
        "trace": {"rate_scale": 1},
    })
    assert expand(a)[0].config_hash == expand(b)[0].config_hash


def test_config_hash_is_stable_across_processes():
    code = ("from harness.sweep.grid import Grid, expand; import json, sys; "
            "print(expand(Grid.from_dict(json.loads(sys.argv[1])))[5].config_hash)")
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(GRID)], env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expand(Grid.from_dict(GRID))[5].config_hash


@pytest.mark.parametrize("grid, match", [
    ({"grid": {"blok_size": [8]}}, "blok_size"),
    ({"base": {"allocator": {"blok_size": 8}}}, "blok_size"),
    ({"grid": {"block_size": 8}}, "non-empty list"),
    ({"trace": {"rate": 2}}, "rate"),
    ({"grid": {"rate_scale": [0]}}, "rate_scale"),
    ({"grids": {}}, "grids"),
])
def test_bad_grids_name_the_key(grid, match):
    with pytest.raises(GridError, match=match):
        expand(Grid.from_dict(grid))


def test_examples_expand():
    paths = sorted(EXAMPLES.glob("*.toml"))
    assert len(paths) >= 2
    for path in paths:
        assert expand(Grid.from_toml(path))


def test_results_table_rows_in_grid_order(tmp_path):
    summary = _sweep(tmp_path, executor=LocalExecutor(2))
    assert (summary.cells, summary.ok, summary.error, summary.pending) == (12, 12, 0, 0)
    table = pd.read_csv(tmp_path / RESULTS_CSV)
    assert table["cell"].tolist() == list(range(12))
    assert list(table.columns[:10]) == ["cell", "config_hash", "status", "error", "trace",
                                        "rate_scale", "model", "allocator", "block_size",
                                        "requests"]
    assert table["block_size"].isna().tolist() == [True] * 2 + [False] * 4 + [True] * 2 + [False] * 4
    for row in table.itertuples():
        assert (tmp_path / "cells" / row.config_hash / "run.json").is_file()


def test_local_and_dask_give_the_same_bytes(tmp_path):
    distributed = pytest.importorskip("distributed")
    _sweep(tmp_path / "local", executor=LocalExecutor(2))
    with distributed.LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        _sweep(tmp_path / "dask", executor=DaskExecutor(client))
    assert _tree(tmp_path / "local") == _tree(tmp_path / "dask")


def test_resume_after_limit_gives_the_uninterrupted_table(tmp_path):
    _sweep(tmp_path / "whole")
    first = _sweep(tmp_path / "parts", limit=5)
    assert (first.ok, first.pending) == (5, 7)
    assert len(pd.read_csv(tmp_path / "parts" / RESULTS_CSV)) == 5
    second = _sweep(tmp_path / "parts")
    assert (second.skipped, second.ok, second.pending) == (5, 12, 0)
    assert _tree(tmp_path / "whole") == _tree(tmp_path / "parts")


def test_resume_after_a_crash_gives_the_uninterrupted_table(tmp_path):
    _sweep(tmp_path / "whole")
    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "crashed"
    first = _sweep(out, fn=functools.partial(crash_once, markers))
    assert (first.ok, first.error) == (11, 1)
    # what a kill mid-write leaves behind: a half-built cell directory and a temporary table
    (out / "cells" / ".tmp-0123456789abcdef-99").mkdir()
    (out / f".{RESULTS_CSV}.abc.tmp").write_text("cell,conf")
    second = _sweep(out, fn=functools.partial(crash_once, markers))
    assert (second.skipped, second.ok, second.error) == (11, 12, 0)
    assert _tree(tmp_path / "whole") == _tree(out)


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(tmp_path):
    summary = _sweep(tmp_path, fn=fail_block_size_32, executor=LocalExecutor(2))
    assert (summary.ok, summary.error) == (8, 4)
    table = pd.read_csv(tmp_path / RESULTS_CSV, keep_default_na=False)
    failed = table[table["status"] == "error"]
    assert failed["block_size"].tolist() == ["32"] * 4
    assert set(failed["error"]) == {"ValueError: block_size 32 is not supported here"}
    assert set(failed["utilization_mean"]) == {""}
    assert not any((tmp_path / "cells" / h).exists() for h in failed["config_hash"])


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


ENGINE_GRID = """
[base]
model = "llama3-8b"
budget_slots_override = 8192
[trace]
source = "azure-conv"
max_requests = 30
[grid]
allocator = ["static", "paged", "hybrid"]
block_size = [16, 64]
"""


def test_engine_sweep_on_local_processes_and_a_local_cluster_match(tmp_path, capsys):
    pytest.importorskip("distributed")
    from harness.cli import main

    grid = tmp_path / "grid.toml"
    grid.write_text(ENGINE_GRID)
    common = [str(grid), "--workers", "2", "--no-progress"]
    assert main(["sweep", *common, "--out", str(tmp_path / "local")]) == 0
    assert main(["sweep", *common, "--out", str(tmp_path / "dask"), "--scheduler", "local"]) == 0
    assert "5 cells: 5 ok (0 done before), 0 error, 0 not run" in capsys.readouterr().out
    assert _tree(tmp_path / "local") == _tree(tmp_path / "dask")
    table = pd.read_csv(tmp_path / "local" / RESULTS_CSV)
    assert table["status"].eq("ok").all() and table["completed"].eq(30).all()
    run = json.loads((tmp_path / "local" / "cells" / table["config_hash"][1] / "run.json").read_text())
    assert run["config"]["allocator"] == {"name": "paged", "params": {"block_size": 16}}
    assert run["trace"]["rows"] == 30


def test_cli_dry_run_lists_the_cells(tmp_path, capsys):
    from harness.cli import main

    grid = tmp_path / "grid.toml"
    grid.write_text(ENGINE_GRID)
    assert main(["sweep", str(grid), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "5 cells"
    assert "allocator=static\n" in out and "allocator=hybrid block_size=64" in out
    assert not (tmp_path / "out").exists()


def test_a_sweep_varies_replicas_and_routers(tmp_path):
    grid = Grid.from_dict({
        "base": {"model": "tiny", "budget_slots_override": 4096},
        "trace": {"source": "azure-conv", "max_requests": 12},
        "grid": {"replicas": [1, 2], "router": ["round-robin", "prefix-aware"]},
    })
    cells = expand(grid)
    assert [(c.config.replicas, c.config.router) for c in cells] == [
        (1, "round-robin"), (1, "prefix-aware"), (2, "round-robin"), (2, "prefix-aware")]
    # A default-valued new field leaves the hash of a cell written before it existed alone.
    plain = expand(Grid.from_dict({**grid.to_dict(), "grid": {}}))[0]
    assert cells[0].config_hash == plain.config_hash
    from harness.sweep.runner import simulate_cell

    run_sweep(grid, cells, tmp_path, LocalExecutor(1), cell_fn=simulate_cell, progress=False)
    table = pd.read_csv(tmp_path / RESULTS_CSV)
    assert table["replicas"].tolist() == [1, 1, 2, 2]
    assert table["completed"].eq(12).all()
    assert table["prefix_hit_rate"].isna().tolist() == [True, True, False, False]


def test_a_sweep_varies_the_kv_dtype(tmp_path):
    grid = Grid.from_dict({
        "base": {"model": "tiny", "gpu": "h100-80gb"},
        "trace": {"source": "azure-conv", "max_requests": 4},
        "grid": {"kv_dtype": ["bf16", "fp8"]},
    })
    cells = expand(grid)
    assert [c.config.kv_dtype for c in cells] == ["bf16", "fp8"]
    assert cells[0].config_hash != cells[1].config_hash
    # The default dtype leaves the hash of a cell written before the field existed alone.
    assert cells[0].config_hash == expand(Grid.from_dict({**grid.to_dict(), "grid": {}}))[
        0].config_hash
    from harness.sweep.runner import simulate_cell

    run_sweep(grid, cells, tmp_path, LocalExecutor(1), cell_fn=simulate_cell, progress=False)
    table = pd.read_csv(tmp_path / RESULTS_CSV)
    assert table["kv_dtype"].tolist() == ["bf16", "fp8"]
    # Twice the tokens, but for the scales' few bytes and the rounding to whole tokens.
    assert abs(table["budget_slots"][1] - 2 * table["budget_slots"][0]) <= 1
