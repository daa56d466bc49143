"""Damaged files (broken gzip, stray carriage returns, extra fields, binary junk) raise TraceError
naming the file, the line and the field, never another exception and never silently."""
from __future__ import annotations

import gzip

import pytest

from workloads import TraceError, load_trace

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
