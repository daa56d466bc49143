"""The bundled real traces load cleanly and `kvharness trace info` reproduces their README figures."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main as cli
from workloads import iter_requests, load_trace

SHARED = Path("/work/shared/traces")

# The figures of workloads/data/README.md (copied from the traces' own README), at its precision.
README = {
    "azure-conv": {
        "rows": 19_366, "span_s": 3_502, "rate": 5.5,
        "prompt": (1_155, 1_020, 4_142, 14_050, 2),
        "output": (211, 129, 601, 1_000, 7),
        "prefix": "no prefix hashes",
    },
    "mooncake-conv": {
        "rows": 12_031, "span_s": 3_537, "rate": 3.4,
        "prompt": (12_035, 6_909, 85_400, 126_195, 891),
        "output": (343, 350, 1_119, 2_000, 1),
        "prefix": "288,500 block references to 182,790 distinct blocks: 36.6% reusable",
    },
}


def _number(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.mark.parametrize("name", sorted(README))
def test_trace_info_reproduces_the_readme_figures(name, capsys):
    assert cli(["trace", "info", name]) == 0
    out = capsys.readouterr().out
    figures = README[name]
    assert _number(re.search(r"^rows\s+([\d,]+)$", out, re.M).group(1)) == figures["rows"]
    span = _number(re.search(r"^span\s+([\d,.]+) s$", out, re.M).group(1))
    assert round(span) == figures["span_s"]
    rate = _number(re.search(r"^rate\s+([\d.]+) req/s$", out, re.M).group(1))
    assert round(rate, 1) == figures["rate"]
    for column in ("prompt", "output"):
        found = re.search(
            rf"^{column}\s+mean ([\d,]+)\s+median ([\d,]+)\s+p99 ([\d,]+)\s+max ([\d,]+)\s+min ([\d,]+)$",
            out, re.M,
        )
        assert tuple(_number(g) for g in found.groups()) == figures[column]
    assert figures["prefix"] in out
    assert "skipped  0 invalid rows" in out


@pytest.mark.parametrize("name", sorted(README))
def test_bundled_traces_are_canonical_and_in_order(name, check_canonical):
    trace = load_trace(name)
    check_canonical(trace)
    assert trace.attrs["skipped_rows"] == []
    assert trace.attrs["name"] == name
    assert trace.attrs["source"].startswith("workloads/data/")


def test_mooncake_keeps_hash_ids_as_prefix_hashes():
    trace = load_trace("mooncake-conv")
    assert trace.attrs["chunk_tokens"] == 512
    first = trace.iloc[0]
    assert first["prompt_tokens"] == 6758 and first["output_tokens"] == 500
    assert first["prefix_hashes"] == tuple(range(14))
    blocks = trace["prefix_hashes"].map(len)
    assert (blocks == -(-trace["prompt_tokens"] // 512)).all()


@pytest.mark.parametrize(
    "name, path",
    [
        ("azure-conv", SHARED / "azure2023" / "AzureLLMInferenceTrace_conv.csv"),
        ("mooncake-conv", SHARED / "mooncake" / "conversation_trace.jsonl"),
    ],
)
def test_bundled_copy_equals_the_shared_file(name, path):
    if not path.exists():
        pytest.skip(f"{path} is only on the development machine")
    pd.testing.assert_frame_equal(load_trace(name), load_trace(path), check_flags=False)


@pytest.mark.parametrize("name", sorted(README))
def test_streaming_yields_exactly_the_loaded_rows(name):
    loaded = load_trace(name)
    streamed = list(iter_requests(name, chunk_rows=4_000))
    assert streamed == list(loaded.itertuples(index=False, name=None))
