"""Shared by the tests that run a benchmark script in a subprocess on the CPU."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cpu_script_env() -> dict[str, str]:
    """The environment of a benchmark script run on the CPU: the repository and benchmarks/
    ahead of whatever PYTHONPATH already holds (where a machine keeps simpy, say), no GPU
    visible and Triton in the interpreter, as on a machine without a GPU."""
    paths = [str(ROOT), str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            "CUDA_VISIBLE_DEVICES": "", "TRITON_INTERPRET": "1"}
