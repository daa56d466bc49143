"""Bad input raises one TraceError naming the file, the line and the field; skip_invalid drops it."""
from __future__ import annotations

import pytest

from harness.cli import main as cli
from workloads import TraceError, iter_requests, load_trace

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
AZURE_ROWS = [
    "2023-11-16 18:15:46.6805900,374,44\n",
    "2023-11-16 18:15:50.9951690,396,109\n",
    "2023-11-16 18:15:51.2224670,879,55\n",
]


def _azure(row3: str | None = None, header: str = AZURE_HEADER) -> str:
    rows = list(AZURE_ROWS)
    if row3 is not None:
        rows[1] = row3 + "\n"  # the second data row: line 3 of the file
    return header + "".join(rows)


MOONCAKE_ROWS = [
    '{"timestamp": 0, "input_length": 700, "output_length": 50, "hash_ids": [0, 1]}\n',
    '{"timestamp": 250, "input_length": 600, "output_length": 30, "hash_ids": [0, 2]}\n',
    '{"timestamp": 900, "input_length": 100, "output_length": 10, "hash_ids": [3]}\n',
]


def _mooncake(line2: str) -> str:
    return MOONCAKE_ROWS[0] + line2 + "\n" + MOONCAKE_ROWS[2]


def _raises(path, line: int, field: str, *words: str, **kwargs) -> TraceError:
    with pytest.raises(TraceError) as caught:
        load_trace(path, **kwargs)
    message = str(caught.value)
    assert str(path) in message
    assert f"line {line}," in message
    assert f"field {field!r}" in message
    for word in words:
        assert word in message
    assert (caught.value.line, caught.value.field) == (line, field)
    return caught.value


AZURE_CASES = {
    "missing column": (_azure(header="TIMESTAMP,ContextTokens\n"), 1, "GeneratedTokens", "missing column"),
    "negative length": (_azure("2023-11-16 18:15:50.9951690,-5,109"), 3, "ContextTokens", ">= 1", "-5"),
    "zero output": (_azure("2023-11-16 18:15:50.9951690,396,0"), 3, "GeneratedTokens", ">= 1"),
    "fractional length": (_azure("2023-11-16 18:15:50.9951690,396.5,109"), 3, "ContextTokens", "whole number", "396.5"),
    "text length": (_azure("2023-11-16 18:15:50.9951690,396,lots"), 3, "GeneratedTokens", "whole number", "lots"),
    "missing value": (_azure("2023-11-16 18:15:50.9951690,,109"), 3, "ContextTokens", "missing value"),
    "unparsable timestamp": (_azure("yesterday,396,109"), 3, "TIMESTAMP", "not a timestamp", "yesterday"),
    "out of order": (_azure("2023-11-16 18:15:40.0000000,396,109"), 3, "TIMESTAMP", "arrival order"),
    "header only": (AZURE_HEADER, 2, "TIMESTAMP", "no requests"),
}


@pytest.mark.parametrize("case", sorted(AZURE_CASES))
def test_azure_bad_input(case, write):
    content, line, field, *words = AZURE_CASES[case]
    _raises(write("azure.csv", content), line, field, *words)


def test_latin1_bytes_in_a_csv_value_name_their_line_and_column(write):
    content = _azure("2023-11-16 18:15:50.9951690,39\xe9,109").encode("latin-1")
    _raises(write("azure.csv", content), 3, "ContextTokens", "not UTF-8")


def test_latin1_bytes_in_the_csv_header(write):
    content = _azure(header="TIMESTAMP,ContextTokens,GeneratedTokens\xe9\n").encode("latin-1")
    _raises(write("azure.csv", content), 1, "header", "not UTF-8")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_utf16_and_utf32_files_are_refused(encoding, write):
    path = write("azure.csv", _azure().encode(encoding))
    _raises(path, 1, "encoding", "UTF-8")
    _raises(path, 1, "encoding", "UTF-8", format="azure")


def test_an_unclosed_quote_names_its_line(write):
    content = AZURE_HEADER + AZURE_ROWS[0] + '"2023-11-16 18:15:50.9,396,109\n' + AZURE_ROWS[2]
    _raises(write("azure.csv", content), 3, "(row)", "unreadable CSV")


def test_empty_file(write):
    path = write("empty.csv", "")
    _raises(path, 1, "header", "empty")
    _raises(path, 1, "TIMESTAMP", "empty", format="azure")
    _raises(path, 1, "timestamp", "empty", format="mooncake")
    _raises(path, 1, "conversations", "empty", format="sharegpt")


MOONCAKE_CASES = {
    "truncated line": ('{"timestamp": 250, "input_length": 600, "output_length": 3', 2, "output_length", "invalid JSON"),
    "missing field": ('{"timestamp": 250, "input_length": 600, "output_length": 30}', 2, "hash_ids", "missing field"),
    "negative length": ('{"timestamp": 250, "input_length": 600, "output_length": -3, "hash_ids": []}', 2, "output_length", ">= 1", "-3"),
    "fractional length": ('{"timestamp": 250, "input_length": 600.5, "output_length": 3, "hash_ids": []}', 2, "input_length", "whole number", "600.5"),
    "string length": ('{"timestamp": 250, "input_length": "600", "output_length": 3, "hash_ids": []}', 2, "input_length", "whole number"),
    "bad timestamp": ('{"timestamp": "noon", "input_length": 600, "output_length": 3, "hash_ids": []}', 2, "timestamp", "not a number", "noon"),
    "out of order": ('{"timestamp": -1, "input_length": 600, "output_length": 3, "hash_ids": []}', 2, "timestamp", "arrival order"),
    "bad hashes": ('{"timestamp": 250, "input_length": 600, "output_length": 3, "hash_ids": [1, "x"]}', 2, "hash_ids", "integers"),
    "not an object": ("[250, 600, 3]", 2, "(line)", "not a JSON object"),
}


@pytest.mark.parametrize("case", sorted(MOONCAKE_CASES))
def test_mooncake_bad_input(case, write):
    line2, line, field, *words = MOONCAKE_CASES[case]
    _raises(write("mooncake.jsonl", _mooncake(line2)), line, field, *words)


def test_latin1_bytes_in_a_json_line_name_the_field(write):
    line2 = '{"timestamp": 250, "input_length": 600, "output_length": 30, "hash_ids": [0], "user": "Jos\xe9"}'
    path = write("mooncake.jsonl", _mooncake(line2).encode("latin-1"))
    _raises(path, 2, "user", "not UTF-8")


def test_skip_invalid_drops_bad_rows_and_lists_them(write):
    content = AZURE_HEADER + "".join(
        [
            "2023-11-16 18:15:46.0,374,44\n",  # line 2
            "2023-11-16 18:15:47.0,-1,44\n",  # line 3: negative
            "2023-11-16 18:15:48.0,100,20\n",  # line 4
            "2023-11-16 18:15:45.0,100,20\n",  # line 5: before line 4
            "\n",  # line 6: blank, not a row
            "2023-11-16 18:15:49.0,1.5,20\n",  # line 7: fractional
            "2023-11-16 18:15:50.0,100,20\n",  # line 8
        ]
    )
    path = write("azure.csv", content)
    trace = load_trace(path, skip_invalid=True)
    assert trace["prompt_tokens"].tolist() == [374, 100, 100]
    assert trace["arrival_s"].tolist() == [0.0, 2.0, 4.0]
    skipped = trace.attrs["skipped_rows"]
    assert [line for line, _ in skipped] == [3, 5, 7]
    assert "ContextTokens" in skipped[0][1] and "TIMESTAMP" in skipped[1][1]
    streamed = list(iter_requests(path, skip_invalid=True, chunk_rows=2))
    assert streamed == list(trace.itertuples(index=False, name=None))


def test_skip_invalid_drops_broken_json_lines(write):
    path = write("mooncake.jsonl", _mooncake('{"timestamp": 250, "input_len'))
    trace = load_trace(path, skip_invalid=True)
    assert trace["prompt_tokens"].tolist() == [700, 100]
    assert [line for line, _ in trace.attrs["skipped_rows"]] == [2]


def test_the_first_bad_line_is_reported(write):
    rows = AZURE_ROWS[0] + "2023-11-16 18:15:47.0,-1,44\n" + "bad,1,1\n"
    _raises(write("azure.csv", AZURE_HEADER + rows), 3, "ContextTokens")


def test_trace_info_prints_the_skipped_rows(write, capsys):
    path = write("mooncake.jsonl", _mooncake('{"timestamp": 250, "input_len'))
    assert cli(["trace", "info", str(path), "--skip-invalid"]) == 0
    out = capsys.readouterr().out
    assert "skipped  1 invalid rows" in out
    assert "line 2: input_len: invalid JSON" in out


def test_trace_info_reports_errors_on_stderr(write, capsys):
    path = write("mooncake.jsonl", _mooncake('{"timestamp": 250, "input_len'))
    assert cli(["trace", "info", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "line 2" in err


def test_a_row_error_names_the_flag_that_skips_it(write):
    error = _raises(write("azure.csv", _azure("2023-11-16 18:15:50.9951690,-5,109")), 3, "ContextTokens")
    assert "--skip-invalid" in str(error) and "skip_invalid=True" in str(error)
    assert "counted" in error.hint


def test_file_errors_do_not_offer_skipping(write):
    error = _raises(write("azure.csv", _azure(header="TIMESTAMP,ContextTokens\n")), 1, "GeneratedTokens")
    assert "skip" not in str(error)


def test_unknown_content_names_the_format_flag(write):
    for content in ["a,b,c\n1,2,3\n", '{"a": 1}\n']:
        error = _raises(write("x.txt", content), 1, "header", "--format azure|mooncake|burstgpt|sharegpt")
        assert "format=" in str(error)


def test_streaming_hands_over_the_skipped_rows(write):
    content = AZURE_HEADER + AZURE_ROWS[0] + "2023-11-16 18:15:47.0,-1,44\n" + AZURE_ROWS[2]
    path = write("azure.csv", content)
    skipped: list = []
    streamed = list(iter_requests(path, skip_invalid=True, chunk_rows=1, skipped_rows=skipped))
    trace = load_trace(path, skip_invalid=True)
    assert len(streamed) == len(trace) == 2
    assert skipped == trace.attrs["skipped_rows"] == [(3, "ContextTokens: must be >= 1")]
