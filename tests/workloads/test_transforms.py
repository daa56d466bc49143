"""Transforms keep the trace canonical and record what they did."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workloads import (
    LogNormal, WorkloadSpec, cap_lengths, generate, load_trace, scale_rate, take, time_window,
)


@pytest.fixture(scope="module")
def mooncake():
    return load_trace("mooncake-conv")


def test_scale_rate_replays_k_times_faster(mooncake, check_canonical):
    fast = scale_rate(mooncake, 4.0)
    check_canonical(fast)
    np.testing.assert_allclose(fast["arrival_s"], mooncake["arrival_s"] / 4.0)
    assert fast.attrs["transforms"] == ["scale_rate(4)"]
    assert mooncake.attrs.get("transforms") is None


def test_time_window_keeps_the_arrivals_inside_and_restarts_the_clock(mooncake, check_canonical):
    window = time_window(mooncake, 600.0, 1200.0)
    check_canonical(window)
    inside = mooncake[(mooncake["arrival_s"] >= 600.0) & (mooncake["arrival_s"] < 1200.0)]
    assert len(window) == len(inside)
    np.testing.assert_allclose(window["arrival_s"], inside["arrival_s"] - inside["arrival_s"].iloc[0])
    assert window["prefix_hashes"].tolist() == inside["prefix_hashes"].tolist()


def test_take_by_count(mooncake, check_canonical):
    part = take(mooncake, 100, start=50)
    check_canonical(part)
    assert part["prompt_tokens"].tolist() == mooncake["prompt_tokens"].iloc[50:150].tolist()
    assert part.attrs["transforms"] == ["take(100, start=50)"]
    assert take(take(mooncake, 10), 5).attrs["transforms"] == ["take(10, start=0)", "take(5, start=0)"]


def test_cap_lengths_counts_and_cuts_hashes(mooncake, check_canonical):
    capped = cap_lengths(mooncake, 32_768)
    check_canonical(capped)
    total = capped["prompt_tokens"] + capped["output_tokens"]
    assert (total <= 32_768).all()
    long_prompts = int((mooncake["prompt_tokens"] > 32_767).sum())
    assert capped.attrs["capped"]["prompts"] == long_prompts > 0
    over = (mooncake["prompt_tokens"].clip(upper=32_767) + mooncake["output_tokens"]) > 32_768
    assert capped.attrs["capped"]["outputs"] == int(over.sum())
    blocks = capped["prefix_hashes"].map(len)
    assert (blocks == -(-capped["prompt_tokens"] // 512)).all()
    untouched = mooncake["prompt_tokens"] + mooncake["output_tokens"] <= 32_768
    assert capped[untouched].drop(columns="request_id").equals(
        mooncake[untouched].drop(columns="request_id")
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 1000), max_model_len=st.integers(2, 5000),
    factor=st.floats(0.01, 100), start=st.floats(0, 50), count=st.integers(0, 80),
)
def test_any_chain_of_transforms_stays_canonical(seed, max_model_len, factor, start, count, check_canonical):
    trace = generate(
        WorkloadSpec(80, prompt_tokens=LogNormal(800, 1.0), turns=2, chunk_tokens=16, seed=seed)
    )
    out = take(time_window(scale_rate(cap_lengths(trace, max_model_len), factor), start), count)
    check_canonical(out)
    assert ((out["prompt_tokens"] + out["output_tokens"]) <= max_model_len).all()
    assert len(out.attrs["transforms"]) == 4


@pytest.mark.parametrize(
    "call",
    [lambda t: scale_rate(t, 0), lambda t: time_window(t, 5, 5), lambda t: take(t, -1),
     lambda t: cap_lengths(t, 1)],
)
def test_invalid_arguments_are_refused(call, mooncake):
    with pytest.raises(ValueError):
        call(mooncake)
