"""Bad allocator parameters, wherever they come from, exit 2 with one clear message."""
from __future__ import annotations

import pytest

from harness.cli import main

pytest.importorskip("workloads")


def _simulate(tmp_path, *args):
    return main(["simulate", "--trace", "azure-conv", "--requests", "5", "--out",
                 str(tmp_path / "run"), "--no-progress", *args])


@pytest.mark.parametrize("args, message", [
    (["--allocator", "paged", "--param", "block_size=abc"],
     "allocator paged: block_size='abc' is not an integer; allowed: an integer in 1..256"),
    (["--allocator", "paged", "--param", "nonsense=1"],
     "--param nonsense=1: no allocator of this run (paged) has a parameter 'nonsense'"),
    (["--allocator", "paged", "--param", "foo.block_size=16"],
     "--param foo.block_size=16: unknown allocator 'foo'; allocators: static, paged"),
    (["--allocator", "paged", "--param", "hybrid.block_size=16"],
     "--param hybrid.block_size=16: allocator hybrid is not in this run (allocators: paged)"),
    (["--allocator", "static,segmented", "--param", "block_size=32"],
     "no allocator of this run (static, segmented) has a parameter 'block_size'"),
    (["--allocator", "paged", "--block-size", "512"],
     "allocator paged: block_size=512 is above 256; allowed: an integer in 1..256"),
    (["--allocator", "paged", "--param", "block_size=0"],
     "allocator paged: block_size=0 is below 1; allowed: an integer in 1..256"),
    (["--allocator", "static", "--param", "align_tokens=0"],
     "allocator static: align_tokens=0 is below 1"),
    (["--allocator", "nope"], "unknown allocator 'nope'"),
])
def test_simulate_rejects_bad_params_with_exit_2(tmp_path, capsys, args, message):
    assert _simulate(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_an_unprefixed_param_goes_only_to_the_allocators_that_take_it(tmp_path):
    import json

    code = _simulate(tmp_path, "--allocator", "static,hybrid", "--param", "segment_tokens=4096",
                     "--param", "static.fit=best")
    assert code == 0
    params = {name: json.loads((tmp_path / "run" / name / "run.json").read_text())["config"]
              ["allocator"]["params"] for name in ("static", "hybrid")}
    assert params == {"static": {"fit": "best"}, "hybrid": {"segment_tokens": 4096}}


def test_a_bad_toml_allocator_param_exits_2(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('[allocator]\nname = "segmented"\npage_size = "big"\n')
    assert _simulate(tmp_path, "--config", str(config)) == 2
    assert "allocator segmented: page_size='big' is not an integer" in capsys.readouterr().err


def test_a_bad_sweep_grid_param_exits_2(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text('[trace]\nmax_requests = 5\n[base.allocator]\nname = "paged"\n'
                    '[grid]\nblock_size = [16, 1000]\n')
    assert main(["sweep", str(grid), "--out", str(tmp_path / "sweep"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "cell {'block_size': 1000}" in err
    assert "allocator paged: block_size=1000 is above 256" in err


def test_plan_reads_the_specs_and_rejects_a_bad_param(capsys):
    assert main(["plan", "--param", "paged.block_size=x"]) == 2
    assert "allocator paged: block_size='x' is not an integer" in capsys.readouterr().err
    assert main(["plan", "--json", "--param", "paged.block_size=64"]) == 0


def test_gpu_rejects_a_param_its_allocator_lacks(capsys):
    pytest.importorskip("torch")
    assert main(["gpu", "--allocator", "static", "--param", "block_size=16",
                 "--device", "cpu"]) == 2
    assert "no allocator of this run (static) has a parameter 'block_size'" in (
        capsys.readouterr().err)


def test_reports_get_the_specs_as_plain_data():
    from allocators import SPECS
    from harness.cli.report import allocator_facts

    facts = allocator_facts()
    assert facts.order == tuple(SPECS)
    assert facts.label("block_size") == "bs" and facts.reservations == {"static": "max_model_len"}
    assert facts.oracles == {"static": "oracle"}
