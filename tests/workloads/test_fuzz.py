"""Fuzzing the loaders: any bytes, plain or gzipped, either load as a canonical trace or raise
TraceError; no other exception gets out, whether the format is detected or given."""
from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workloads import TraceError, iter_requests, load_trace

VALID = {
    "azure": (
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:15:51.2224670,879,55\n"
        "2023-11-16 18:15:52.0000000,12,3\n"
    ),
    "mooncake": "".join(
        json.dumps({"timestamp": ms, "input_length": length, "output_length": 9, "hash_ids": ids})
        + "\n"
        for ms, length, ids in [(0, 700, [0, 1]), (250, 600, [0, 2]), (900, 100, [3]), (950, 1, [])]
    ),
    "burstgpt": (
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "45,ChatGPT,1087,0,1087,Conversation log\n"
        "118,GPT-4,417,276,693,API log\n"
    ),
    "sharegpt": json.dumps(
        [
            {"conversations": [{"from": "human", "value": "hi there"}, {"from": "gpt", "value": "yo"}]},
            {"conversations": [
                {"from": "human", "value": "q" * 300}, {"from": "gpt", "value": "a" * 90},
                {"from": "human", "value": "again"}, {"from": "gpt", "value": "ok"},
            ]},
        ],
        indent=1,
    ),
}

_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def mutated(draw, text: str) -> bytes:
    """A valid trace with a few damages: cuts, flipped bytes, inserted CR, NUL or field."""
    data = bytearray(text.encode())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["cut", "flip", "cr", "nul", "field", "line"]))
        if kind == "cut":
            del data[at:]
        elif kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind in ("cr", "nul"):
            data[at:at] = b"\r" if kind == "cr" else b"\x00"
        elif kind == "field":
            # An extra field at the end of a line: ",7" in CSV; in JSON, a value after the object.
            end = data.find(b"\n", at)
            end = len(data) if end < 0 else end
            data[end:end] = draw(st.sampled_from([b",7", b",", b', "x": 1', b" 1"]))
        elif kind == "line" and data:
            # A copy of some line, out of place (order and duplicate checks).
            start = data.rfind(b"\n", 0, at) + 1
            end = data.find(b"\n", start)
            line = bytes(data[start : (len(data) if end < 0 else end + 1)])
            data[0:0] = line if line.endswith(b"\n") else line + b"\n"
    return bytes(data)


def trace_bytes(fmt: str) -> st.SearchStrategy[bytes]:
    """Random bytes, or a damaged valid trace of fmt; either possibly gzipped, and the gzip
    itself possibly cut."""
    plain = st.one_of(st.binary(max_size=600), mutated(VALID[fmt]))
    packed = plain.map(lambda data: gzip.compress(data, mtime=0))
    cut = st.tuples(packed, st.integers(0, 64)).map(lambda pair: pair[0][: -pair[1] or None])
    return st.one_of(plain, packed, cut)


def _load_or_trace_error(path, check_canonical, **kwargs) -> None:
    try:
        trace = load_trace(path, **kwargs)
    except TraceError as error:
        assert str(path) in str(error) and f"line {error.line}," in str(error)
        assert error.line >= 1 and error.field
        return
    check_canonical(trace)
    skipped = trace.attrs["skipped_rows"]
    assert kwargs.get("skip_invalid") or not skipped
    try:
        streamed = list(iter_requests(path, chunk_rows=2, **kwargs))
    except TraceError:
        pytest.fail("streaming raised where loading did not")
    assert streamed == list(trace.itertuples(index=False, name=None))


@pytest.mark.parametrize("fmt", sorted(VALID))
def test_valid_samples_load(fmt, write, check_canonical):
    trace = load_trace(write("trace", VALID[fmt]))
    check_canonical(trace)
    assert trace.attrs["format"] == fmt and len(trace) >= 3


@pytest.mark.parametrize("fmt", sorted(VALID))
@_SETTINGS
@given(data=st.data())
def test_any_bytes_load_or_raise_trace_error(fmt, data, write, check_canonical):
    content = data.draw(trace_bytes(fmt))
    path = write("trace.gz" if content[:2] == b"\x1f\x8b" else "trace", content)
    given_format = data.draw(st.sampled_from([None, fmt]))
    skip_invalid = data.draw(st.booleans())
    _load_or_trace_error(path, check_canonical, format=given_format, skip_invalid=skip_invalid)
