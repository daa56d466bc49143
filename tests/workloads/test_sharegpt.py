"""ShareGPT: token approximation, one request per answered turn, multi-turn prefix sharing,
seeded Poisson arrivals, errors at the conversation's line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from workloads import TraceError, iter_requests, load_trace
from workloads.formats.sharegpt import approx_tokens

CONVERSATIONS = [
    {"id": "a", "conversations": [
        {"from": "human", "value": "x" * 40},  # 10 tokens
        {"from": "gpt", "value": "y" * 400},  # 100
        {"from": "human", "value": "z" * 80},  # 20
        {"from": "gpt", "value": "w" * 100},  # 25
    ]},
    {"id": "b", "conversations": [
        {"from": "system", "value": "s" * 8},  # 2
        {"from": "human", "value": "h\u00e9llo"},  # 6 bytes: 2
        {"from": "gpt", "value": "ok"},  # 1
        {"from": "human", "value": "never answered"},
    ]},
    {"id": "c", "conversations": [
        {"from": "gpt", "value": "g" * 80},  # 20, answers nothing
        {"from": "human", "value": "q"},  # 1
        {"from": "gpt", "value": "a"},  # 1
    ]},
]


@pytest.fixture
def sharegpt(write):
    return write("sharegpt.json", json.dumps(CONVERSATIONS, indent=2))


def test_approx_tokens_is_four_utf8_bytes_a_token():
    assert approx_tokens("abcd") == 1
    assert approx_tokens("abcde") == 2
    assert approx_tokens("") == 1
    assert approx_tokens("\u65e5\u672c") == 2  # 6 bytes


def test_each_answered_turn_is_a_request_with_the_conversation_so_far(sharegpt, check_canonical):
    trace = load_trace(sharegpt, chunk_tokens=4)
    check_canonical(trace)
    assert trace.attrs["format"] == "sharegpt"
    assert trace.attrs["chunk_tokens"] == 4
    assert trace["prompt_tokens"].tolist() == [10, 130, 4, 21]
    assert trace["output_tokens"].tolist() == [100, 25, 1, 1]


def test_later_turns_share_the_earlier_turns_full_chunks(sharegpt):
    hashes = load_trace(sharegpt, chunk_tokens=4)["prefix_hashes"].tolist()
    first, second = hashes[0], hashes[1]
    assert len(first) == 3 and len(second) == 33  # ceil(10 / 4), ceil(130 / 4)
    assert second[:2] == first[:2]  # the two full chunks of turn 1
    assert second[2] != first[2]  # turn 1's partial chunk is full and different in turn 2
    others = set(hashes[2]) | set(hashes[3])
    assert not others & (set(first) | set(second))
    every = [h for request in hashes for h in request]
    assert len(set(every)) == len(every) - 2


def test_arrivals_are_seeded_poisson(write):
    many = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}]
    path = write("many.json", json.dumps(many * 4000))
    trace = load_trace(path, rate_per_s=5.0, seed=3)
    gaps = np.diff(trace["arrival_s"].to_numpy())
    assert trace["arrival_s"].iloc[0] == 0.0
    assert abs(gaps.mean() - 0.2) < 0.02
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.1  # exponential gaps: CV 1
    assert load_trace(path, rate_per_s=5.0, seed=3).equals(trace)
    assert not load_trace(path, rate_per_s=5.0, seed=4).equals(trace)
    streamed = list(iter_requests(path, rate_per_s=5.0, seed=3, chunk_rows=1000))
    assert streamed == list(trace.itertuples(index=False, name=None))


def test_json_lines_read_like_the_array(sharegpt, write):
    lines = write("sharegpt.jsonl", "".join(json.dumps(c) + "\n" for c in CONVERSATIONS))
    assert load_trace(lines).drop(columns="prefix_hashes").equals(
        load_trace(sharegpt).drop(columns="prefix_hashes")
    )


def test_a_truncated_file_names_line_and_field(sharegpt, write):
    text = sharegpt.read_text()
    cut = text[: text.index('"never answered"') + 6]
    path = write("cut.json", cut)
    line = cut.count("\n") + 1
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    assert caught.value.line == line and caught.value.field == "value"
    assert str(path) in str(caught.value) and "invalid JSON" in str(caught.value)
    kept = load_trace(path, skip_invalid=True)
    assert len(kept) == 2 and [ln for ln, _ in kept.attrs["skipped_rows"]] == [line]


@pytest.mark.parametrize("ending", [",", "", ", \n"])
def test_an_unclosed_array_is_reported(ending, write):
    text = json.dumps(CONVERSATIONS[:2], indent=2)[:-1].rstrip() + ending
    path = write("open.json", text)
    with pytest.raises(TraceError, match=r"field '\(array\)'.*truncated file"):
        load_trace(path)
    kept = load_trace(path, skip_invalid=True)
    assert len(kept) == 3 and len(kept.attrs["skipped_rows"]) == 1


def test_a_malformed_conversation_is_reported_where_it_starts(write):
    bad = [CONVERSATIONS[0], {"id": "d", "conversations": [{"from": "human", "value": 7}]}]
    path = write("bad.json", json.dumps(bad, indent=1))
    lines = json.dumps(bad, indent=1).splitlines()
    start = [i for i, text in enumerate(lines, 1) if text == " {"][1]  # the second conversation
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    assert (caught.value.line, caught.value.field) == (start, "conversations[0].value")
    assert len(load_trace(path, skip_invalid=True)) == 2


def test_not_utf8_is_refused_with_line_and_field(write):
    data = json.dumps(CONVERSATIONS, indent=2).replace("h\\u00e9llo", "h\u00e9llo").encode("latin-1")
    path = write("latin1.json", data)
    with pytest.raises(TraceError, match=r"line \d+, field 'value': bytes that are not UTF-8"):
        load_trace(path)
