"""The installed package: every package is listed, and a non-editable install finds the measured
tables and the bundled traces (so the cost model never silently prices a kernel at 1.0)."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for top in ("allocators", "harness", "kernels", "reports", "workloads")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found <= listed


def test_a_non_editable_install_finds_the_measured_tables(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(ROOT)], check=True, capture_output=True)
    probe = (
        "from reports.schema import results_dir; from harness.model.costmodel import "
        "decode_efficiency; d = results_dir(); "
        "print(d); print(decode_efficiency('h100-80gb', 16, contiguous=False)[1])"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, check=True,
                         capture_output=True, text=True, env={"PYTHONPATH": str(target)}).stdout
    where, source = out.split()
    assert Path(where).is_relative_to(target)
    assert (Path(where) / "paged_decode_h100.csv").is_file()
    assert source == "paged_decode_h100.csv"
