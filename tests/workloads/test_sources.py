"""Format detection from content, the format= override, gzip, bundled names."""
from __future__ import annotations

import gzip
import json

import pytest

from workloads import BUNDLED, TraceError, load_trace
from workloads.sources import detect_format, resolve

AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,374,44\n"
MOONCAKE = '{"timestamp": 0, "input_length": 700, "output_length": 50, "hash_ids": [0, 1]}\n'
BURSTGPT = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n5,ChatGPT,4,1,5,API log\n"
SHAREGPT = json.dumps([{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}])


@pytest.mark.parametrize(
    "content, expected",
    [
        (AZURE, "azure"),
        ("\ufeff" + AZURE, "azure"),  # UTF-8 byte-order mark
        (MOONCAKE, "mooncake"),
        ("\ufeff" + MOONCAKE, "mooncake"),
        (BURSTGPT, "burstgpt"),
        (SHAREGPT, "sharegpt"),
        (json.dumps(json.loads(SHAREGPT), indent=2), "sharegpt"),
        (json.dumps(json.loads(SHAREGPT)[0]) + "\n", "sharegpt"),
    ],
)
def test_format_is_detected_from_content_not_name(content, expected, write):
    path = write("trace.txt", content)
    with resolve(path) as source:
        assert detect_format(source) == expected
    assert load_trace(path).attrs["format"] == expected


def test_gzip_is_read_transparently(write):
    plain = load_trace(write("a.csv", AZURE))
    packed = load_trace(write("a.csv.gz", gzip.compress(AZURE.encode(), mtime=0)))
    assert packed.equals(plain)
    assert packed.attrs["name"] == "a"


def test_format_override_is_obeyed(write):
    path = write("azure.csv", AZURE)
    assert load_trace(path, format="azure").equals(load_trace(path))
    with pytest.raises(TraceError, match=r"line 1, field '\(line\)': invalid JSON"):
        load_trace(path, format="mooncake")
    with pytest.raises(ValueError, match="unknown trace format 'csv'"):
        load_trace(path, format="csv")


def test_unknown_content_asks_for_format(write):
    with pytest.raises(TraceError, match="line 1, field 'header': not a known trace format"):
        load_trace(write("x.csv", "a,b,c\n1,2,3\n"))
    with pytest.raises(TraceError, match="line 1, field 'header': a JSON object of no known"):
        load_trace(write("x.jsonl", '{"a": 1}\n'))


def test_bundled_names_and_missing_files():
    assert set(BUNDLED) == {"azure-conv", "mooncake-conv"}
    with pytest.raises(FileNotFoundError, match="bundled: azure-conv, mooncake-conv"):
        load_trace("no-such-trace")
