"""BurstGPT CSV: columns, failed responses kept and marked, errors named by line and column."""
from __future__ import annotations

import pytest

from workloads import TraceError, describe, iter_requests, load_trace

HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
ROWS = (
    "5,ChatGPT,472,18,490,Conversation log\n"
    "45,ChatGPT,1087,0,1087,Conversation log\n"
    "118,GPT-4,417,276,693,API log\n"
    "118,ChatGPT,100,20,120,Conversation log\n"
    "130.5,GPT-4,64,1,65,API log\n"
)


@pytest.fixture
def burst(write):
    return write("BurstGPT_sample.csv", HEADER + ROWS)


def test_reads_the_columns_and_keeps_failed_responses(burst, check_canonical):
    trace = load_trace(burst)
    check_canonical(trace)
    assert trace.attrs["format"] == "burstgpt"
    assert trace.attrs["name"] == "BurstGPT_sample"
    assert trace["arrival_s"].tolist() == [0.0, 40.0, 113.0, 113.0, 125.5]
    assert trace["prompt_tokens"].tolist() == [472, 1087, 417, 100, 64]
    assert trace["output_tokens"].tolist() == [18, 0, 276, 20, 1]
    assert trace["failed"].tolist() == [False, True, False, False, False]
    assert describe(trace).failed == 1


def test_streaming_matches_loading(burst):
    streamed = list(iter_requests(burst, chunk_rows=2))
    assert streamed == list(load_trace(burst).itertuples(index=False, name=None))


def test_format_override_reads_the_same(burst):
    assert load_trace(burst, format="burstgpt").equals(load_trace(burst))


@pytest.mark.parametrize(
    "row, field, words",
    [
        ("50,ChatGPT,0,18,18,Conversation log", "Request tokens", (">= 1",)),
        ("50,ChatGPT,10,-2,8,Conversation log", "Response tokens", (">= 1",)),
        ("soon,ChatGPT,10,2,12,Conversation log", "Timestamp", ("not a number",)),
        ("1,ChatGPT,10,2,12,Conversation log", "Timestamp", ("arrival order",)),
    ],
)
def test_bad_rows_name_line_and_column(row, field, words, write):
    lines = ROWS.splitlines(keepends=True)
    path = write("burst.csv", HEADER + lines[0] + lines[1] + row + "\n")
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    message = str(caught.value)
    assert str(path) in message and "line 4," in message and f"field {field!r}" in message
    assert all(word in message for word in words)


def test_missing_column(write):
    path = write("burst.csv", "Timestamp,Model,Request tokens\n5,ChatGPT,10\n")
    with pytest.raises(TraceError, match="line 1, field 'Response tokens': missing column"):
        load_trace(path)
