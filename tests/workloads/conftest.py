"""Fixtures of the workloads tests: writing trace files, checking the canonical schema."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from workloads import COLUMNS

DTYPES = {
    "request_id": "int64",
    "arrival_s": "float64",
    "prompt_tokens": "int64",
    "output_tokens": "int64",
    "n": "int64",
    "prefix_hashes": "object",
    "failed": "bool",
    "beam_width": "int64",
    "spec_tokens": "int64",
    "spec_accept": "float64",
}


def _check_canonical(trace: pd.DataFrame) -> None:
    assert tuple(trace.columns) == COLUMNS
    assert {name: str(dtype) for name, dtype in trace.dtypes.items()} == DTYPES
    assert {"name", "source", "format", "chunk_tokens", "skipped_rows"} <= set(trace.attrs)
    assert (trace["request_id"].to_numpy() == np.arange(len(trace))).all()
    arrival = trace["arrival_s"].to_numpy()
    if len(trace):
        assert arrival[0] == 0.0
    assert (np.diff(arrival) >= 0).all()
    assert (trace["prompt_tokens"] >= 1).all()
    assert (trace["n"] >= 1).all()
    assert (trace["beam_width"] >= 1).all() and (trace["spec_tokens"] >= 0).all()
    assert trace["spec_accept"].between(0.0, 1.0).all()
    output, failed = trace["output_tokens"], trace["failed"]
    assert ((output >= 1) | (failed & (output == 0))).all()
    for hashes in trace["prefix_hashes"]:
        assert hashes is None or (isinstance(hashes, tuple) and all(type(h) is int for h in hashes))
    if len(trace):
        has_hashes = trace["prefix_hashes"].notna().any()
        assert (trace.attrs["chunk_tokens"] > 0) == bool(has_hashes)


@pytest.fixture
def check_canonical() -> Callable[[pd.DataFrame], None]:
    """Assert that a DataFrame follows the canonical trace schema of workloads/trace.py."""
    return _check_canonical


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str | bytes], Path]:
    """write(name, content) -> path of a new file in tmp_path (text is written as UTF-8)."""

    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return _write
