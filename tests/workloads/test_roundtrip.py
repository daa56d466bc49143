"""Any valid table written in a real format reads back exactly, whole or streamed in chunks."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workloads import iter_requests, load_trace

rows = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(1, 200_000), st.integers(1, 5_000)),
    min_size=1, max_size=40,
)
_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _check(path: Path, gaps_ms, prompts, outputs, chunk_rows, hashes=None):
    trace = load_trace(path)
    np.testing.assert_allclose(trace["arrival_s"], np.cumsum(gaps_ms) / 1000.0 - gaps_ms[0] / 1000.0)
    assert trace["prompt_tokens"].tolist() == prompts
    assert trace["output_tokens"].tolist() == outputs
    if hashes is not None:
        assert trace["prefix_hashes"].tolist() == hashes
    streamed = list(iter_requests(path, chunk_rows=chunk_rows))
    assert streamed == list(trace.itertuples(index=False, name=None))


@_SETTINGS
@given(table=rows, chunk_rows=st.integers(1, 50))
def test_azure_csv_roundtrip(table, chunk_rows, tmp_path):
    gaps, prompts, outputs = (list(column) for column in zip(*table))
    start = np.datetime64("2024-05-10T00:00:00.000", "ms")
    stamps = start + np.cumsum(gaps).astype("timedelta64[ms]")
    lines = [f"{str(t).replace('T', ' ')}0000,{p},{o}\n" for t, p, o in zip(stamps, prompts, outputs)]
    path = tmp_path / "azure.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(lines))
    _check(path, gaps, prompts, outputs, chunk_rows)


@_SETTINGS
@given(table=rows, chunk_rows=st.integers(1, 50))
def test_mooncake_jsonl_roundtrip(table, chunk_rows, tmp_path):
    gaps, prompts, outputs = (list(column) for column in zip(*table))
    times = np.cumsum(gaps).tolist()
    hashes = [tuple(range(i, i + -(-p // 512))) for i, p in enumerate(prompts)]
    records = [
        {"timestamp": t, "input_length": p, "output_length": o, "hash_ids": list(h)}
        for t, p, o, h in zip(times, prompts, outputs, hashes)
    ]
    path = tmp_path / "mooncake.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    _check(path, gaps, prompts, outputs, chunk_rows, hashes)
