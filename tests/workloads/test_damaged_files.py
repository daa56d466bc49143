"""Damaged files (broken gzip, stray carriage returns, extra fields, binary junk) raise TraceError
naming the file, the line and the field, never another exception and never silently."""
from __future__ import annotations

import gzip
import random

import pytest

from workloads import TraceError, iter_requests, load_trace

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
AZURE = AZURE_HEADER + "".join(
    f"2023-11-16 18:{minute:02d}:46.68,{100 + minute},{20 + minute}\n" for minute in range(60)
)


def _raises(path, line: int | None, field: str, *words: str, **kwargs) -> TraceError:
    """The TraceError of loading path; line None: any line, as long as the message names it."""
    with pytest.raises(TraceError) as caught:
        load_trace(path, **kwargs)
    message = str(caught.value)
    assert str(path) in message
    assert f"line {caught.value.line if line is None else line}," in message
    assert f"field {field!r}" in message
    for word in words:
        assert word in message
    return caught.value


def _packed(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


def test_a_truncated_gzip_names_the_line_reached(write):
    packed = _packed(AZURE)
    path = write("azure.csv.gz", packed[: len(packed) // 2])
    error = _raises(path, None, "(file)", "gzip", "truncated")
    assert 1 < error.line < 62  # cut half way through the 61 lines
    # Also with the format given, when no detection reads the file first.
    assert str(_raises(path, None, "(file)", "truncated", format="azure")) == str(error)


def test_a_gzip_cut_after_most_lines_names_a_later_line(write):
    big = AZURE_HEADER + "".join(
        f"2023-11-16 18:15:46.{i:05d},{i % 5000 + 1},{i % 97 + 1}\n" for i in range(20000)
    )
    packed = _packed(big)
    error = _raises(write("azure.csv.gz", packed[: len(packed) * 3 // 4]), None, "(file)")
    assert 10000 < error.line < 20002


@pytest.mark.parametrize("damage", ["checksum", "deflate"])
def test_corrupt_gzip_data(damage, write):
    packed = bytearray(_packed(AZURE))
    if damage == "checksum":
        packed[-8] ^= 0xFF  # the CRC-32 of the trailer
    else:
        packed[len(packed) // 2] ^= 0xFF
    _raises(write("azure.csv.gz", bytes(packed)), None, "(file)", "gzip")


def test_truncated_gzip_in_the_json_formats(write):
    mooncake = "".join(
        f'{{"timestamp": {i}, "input_length": 600, "output_length": 3, "hash_ids": [{i}, 7]}}\n'
        for i in range(500)
    )
    packed = _packed(mooncake)
    for name, fmt in [("m.jsonl.gz", "mooncake"), ("s.json.gz", "sharegpt"), ("x.gz", None)]:
        error = _raises(write(name, packed[:-20]), None, "(file)", "truncated", format=fmt)
        assert error.line > 1


@pytest.mark.parametrize(
    "header", ["TIMESTAMP,Context\rTokens,GeneratedTokens\n", "TIMESTAMP\r,ContextTokens,GeneratedTokens\n"]
)
def test_a_stray_carriage_return_in_the_csv_header(header, write):
    path = write("azure.csv", header + AZURE.split("\n", 1)[1])
    _raises(path, 1, "header", "carriage return")
    _raises(path, 1, "header", "carriage return", format="azure")


def test_an_overlong_csv_header_field(write):
    path = write("azure.csv", '"' + "x" * 200_000 + '",ContextTokens\n1,2\n')
    _raises(path, 1, "header", "unreadable CSV")


def _azure_rows(*rows: str) -> str:
    return AZURE_HEADER + "".join(row + "\n" for row in rows)


def test_a_csv_row_with_an_extra_field(write):
    path = write("azure.csv", _azure_rows(
        "2023-11-16 18:15:46.0,374,44", "2023-11-16 18:15:47.0,396,109,7", "2023-11-16 18:15:48.0,9,5",
    ))
    _raises(path, 3, "(field 4)", "4 fields", "header 3")
    _raises(path, 3, "(field 4)", "4 fields", format="azure")


def test_an_extra_field_in_the_first_row_is_not_taken_for_an_index(write):
    path = write("azure.csv", _azure_rows("2023-11-16 18:15:46.0,374,44,surplus", "2023-11-16 18:15:47.0,396,109"))
    _raises(path, 2, "(field 4)", "4 fields", "surplus")


def test_a_burstgpt_row_with_an_extra_field(write):
    header = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    rows = "5,ChatGPT,472,18,490,API log\n45,ChatGPT,1087,3,1090,API log,x\n"
    _raises(write("burst.csv", header + rows), 3, "(field 7)", "7 fields")


def test_skip_invalid_drops_long_rows_and_keeps_every_other_line_right(write):
    path = write("azure.csv", _azure_rows(
        "2023-11-16 18:15:46.0,1,1,x",  # line 2: long, right after the header
        "2023-11-16 18:15:46.0,2,1,y,z",  # line 3: long
        "2023-11-16 18:15:47.0,3,1",  # line 4
        "2023-11-16 18:15:48.0,4,1,x",  # line 5: long
        "",  # line 6: blank
        "2023-11-16 18:15:49.0,5,1",  # line 7
        "2023-11-16 18:15:50.0,-6,1",  # line 8: negative
        "2023-11-16 18:15:51.0,7,1,x",  # line 9: long
        "2023-11-16 18:15:52.0,8,1",  # line 10
        "2023-11-16 18:15:53.0,9,1,",  # line 11: long, by a trailing comma
    ))
    _raises(path, 2, "(field 4)")
    trace = load_trace(path, skip_invalid=True)
    assert trace["prompt_tokens"].tolist() == [3, 5, 8]
    skipped = trace.attrs["skipped_rows"]
    assert [line for line, _ in skipped] == [2, 3, 5, 8, 9, 11]
    assert skipped[2][1].startswith("(field 4)") and skipped[3][1].startswith("ContextTokens")
    for chunk_rows in (1, 2, 3):
        streamed = list(iter_requests(path, skip_invalid=True, chunk_rows=chunk_rows))
        assert streamed == list(trace.itertuples(index=False, name=None))


def test_the_first_invalid_line_is_reported_across_chunks(write):
    rows = [f"2023-11-16 18:15:{s:02d}.0,{s + 1},1" for s in range(40)]
    rows[30] += ",x"  # line 32
    rows[20] = rows[20].replace(",21,", ",-21,")  # line 22
    path = write("azure.csv", _azure_rows(*rows))
    for chunk_rows in (1, 7, 100):
        with pytest.raises(TraceError, match="line 22,"):
            list(iter_requests(path, chunk_rows=chunk_rows))


MOONCAKE_LINE = '{{"timestamp": 0, "input_length": {length}, "output_length": 5, "hash_ids": {hashes}}}\n'


@pytest.mark.parametrize("length, hashes", [(512, [0, 1]), (1, [0, 1]), (1025, [0, 1, 2, 3])])
def test_mooncake_hash_ids_beyond_the_input_length(length, hashes, write):
    content = MOONCAKE_LINE.format(length=700, hashes=[0, 1]) + MOONCAKE_LINE.format(
        length=length, hashes=hashes
    )
    error = _raises(write("m.jsonl", content), 2, "hash_ids", f"input_length {length}", str(hashes))
    assert str(len(hashes)) in error.reason


@pytest.mark.parametrize("length, hashes", [(512, [0]), (513, [0, 1]), (1025, [0, 1, 2]), (700, [])])
def test_mooncake_hash_ids_within_the_input_length(length, hashes, write):
    trace = load_trace(write("m.jsonl", MOONCAKE_LINE.format(length=length, hashes=hashes)))
    assert trace["prefix_hashes"].tolist() == [tuple(hashes)]


BINARY = {
    "all bytes": bytes(range(256)) * 4,
    "random": random.Random(7).randbytes(5000),
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64),
    "nul after text": AZURE_HEADER.encode() + b"2023-11-16 18:15:46.68,1\x00\x00\x00,2\n",
}


@pytest.mark.parametrize("kind", sorted(BINARY))
@pytest.mark.parametrize("fmt", [None, "azure", "mooncake", "burstgpt", "sharegpt"])
def test_binary_data_is_called_binary_not_utf16(kind, fmt, write):
    content = BINARY[kind]
    for name, data in [("junk.bin", content), ("junk.bin.gz", gzip.compress(content, mtime=0))]:
        error = _raises(write(name, data), None, "(file)", "not a text trace: binary data at byte", format=fmt)
        assert "UTF-16" not in str(error)
    at = content.index(next(b for b in content if b < 9 or 13 < b < 32 or b == 127).to_bytes(1, "big"))
    assert f"at byte {at}" in str(error) and error.line == content.count(b"\n", 0, at) + 1


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_wide_text_without_a_byte_order_mark_is_named(encoding, write):
    path = write("azure.csv", AZURE.encode(encoding))
    _raises(path, 1, "encoding", encoding[:6].upper(), "save it as UTF-8")


def test_a_timestamp_outside_the_nanosecond_range_is_a_bad_field(tmp_path):
    """Found by the fuzz test: year 0 parses, then fails converting to nanoseconds."""
    path = tmp_path / "azure.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n\r0000,1,3\n")
    with pytest.raises(TraceError) as err:
        load_trace(path, format="azure")
    assert "TIMESTAMP" in str(err.value)
