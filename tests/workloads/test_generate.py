"""Synthetic workloads: canonical, deterministic, and sharing the prefixes they promise."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workloads import (
    Fixed, Gamma, LogNormal, Poisson, Resampled, Uniform, WorkloadSpec, generate, load_trace,
)

lengths = st.one_of(
    st.builds(Fixed, st.integers(1, 3000)),
    st.builds(lambda low, extra: Uniform(low, low + extra), st.integers(1, 500), st.integers(0, 500)),
    st.builds(LogNormal, st.floats(1, 2000), st.floats(0, 2)),
)
specs = st.builds(
    WorkloadSpec,
    num_requests=st.integers(1, 60),
    arrivals=st.one_of(
        st.builds(Poisson, st.floats(0.01, 100)), st.builds(Gamma, st.floats(0.01, 100), st.floats(0.1, 5))
    ),
    prompt_tokens=lengths,
    output_tokens=lengths,
    n=st.integers(1, 4),
    system_prompt_tokens=st.integers(0, 700),
    num_system_prompts=st.integers(1, 3),
    turns=st.integers(1, 5),
    think_time_s=st.floats(0, 60),
    chunk_tokens=st.sampled_from([1, 16, 64, 512]),
    seed=st.integers(0, 2**32 - 1),
)


# check_canonical is a stateless function, so sharing it across examples is safe.
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs)
def test_generated_traces_are_canonical_and_deterministic(spec, check_canonical):
    trace = generate(spec)
    check_canonical(trace)
    assert len(trace) == spec.num_requests
    assert (trace["n"] == spec.n).all()
    assert trace.attrs["format"] == "synthetic"
    assert generate(spec).equals(trace)
    assert (trace["prompt_tokens"] > spec.system_prompt_tokens).all()
    if spec.shares_prefixes:
        blocks = trace["prefix_hashes"].map(len)
        assert (blocks == -(-trace["prompt_tokens"] // spec.chunk_tokens)).all()


def test_seed_changes_the_trace():
    spec = WorkloadSpec(200, prompt_tokens=LogNormal(500, 1.0), output_tokens=Uniform(1, 300))
    other = WorkloadSpec(200, prompt_tokens=LogNormal(500, 1.0), output_tokens=Uniform(1, 300), seed=1)
    assert not generate(spec).equals(generate(other))


@pytest.mark.parametrize("cv", [1.0, 3.0, 0.5])
def test_gamma_arrivals_have_the_asked_rate_and_burstiness(cv):
    trace = generate(WorkloadSpec(20_000, arrivals=Gamma(rate_per_s=8.0, cv=cv), seed=7))
    gaps = np.diff(trace["arrival_s"].to_numpy())
    assert gaps.mean() == pytest.approx(1 / 8.0, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.1)


def test_poisson_is_gamma_with_cv_one():
    gaps = np.diff(generate(WorkloadSpec(20_000, arrivals=Poisson(4.0)))["arrival_s"].to_numpy())
    assert gaps.mean() == pytest.approx(0.25, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.1)


def test_length_distributions():
    rng = np.random.default_rng(0)
    assert (Fixed(7).sample(rng, 5) == 7).all()
    uniform = Uniform(3, 5).sample(rng, 1000)
    assert set(uniform.tolist()) == {3, 4, 5}
    lognormal = LogNormal(300, 0.5, high=1000).sample(rng, 20_000)
    assert np.median(lognormal) == pytest.approx(300, rel=0.05) and lognormal.max() <= 1000
    azure = load_trace("azure-conv")["output_tokens"]
    resampled = Resampled("azure-conv", "output_tokens").sample(rng, 5000)
    assert set(resampled.tolist()) <= set(azure.tolist())
    assert resampled.mean() == pytest.approx(azure.mean(), rel=0.1)


def test_one_system_prompt_is_shared_by_every_request():
    trace = generate(WorkloadSpec(50, system_prompt_tokens=640, chunk_tokens=64))
    heads = {hashes[:10] for hashes in trace["prefix_hashes"]}
    assert len(heads) == 1  # the ten full chunks of the system prompt
    tails = [h for hashes in trace["prefix_hashes"] for h in hashes[10:]]
    assert len(set(tails)) == len(tails)


def test_system_prompts_are_chosen_among_several():
    trace = generate(WorkloadSpec(200, system_prompt_tokens=128, num_system_prompts=3, chunk_tokens=64))
    assert len({hashes[:2] for hashes in trace["prefix_hashes"]}) == 3


def test_later_turns_share_the_conversation_so_far():
    spec = WorkloadSpec(
        300, prompt_tokens=Uniform(64, 400), output_tokens=Uniform(1, 300), turns=4,
        think_time_s=5.0, chunk_tokens=16, arrivals=Poisson(2.0),
    )
    trace = generate(spec)
    # Every user message has >= 64 tokens, so a conversation's first chunk is full and its own.
    for _, turns in trace.groupby(trace["prefix_hashes"].map(lambda h: h[0])):
        prompts, outputs = turns["prompt_tokens"].tolist(), turns["output_tokens"].tolist()
        hashes = turns["prefix_hashes"].tolist()
        assert len(turns) <= spec.turns
        for k in range(1, len(turns)):
            assert prompts[k] > prompts[k - 1] + outputs[k - 1]
            full = prompts[k - 1] // spec.chunk_tokens
            assert hashes[k][:full] == hashes[k - 1][:full]


@pytest.mark.parametrize(
    "kwargs", [{"num_requests": 0}, {"n": 0}, {"turns": 0}, {"chunk_tokens": 0}, {"think_time_s": -1}]
)
def test_invalid_specs_are_refused(kwargs):
    with pytest.raises(ValueError):
        WorkloadSpec(**{"num_requests": 1, **kwargs})


@pytest.mark.parametrize(
    "make", [lambda: Poisson(0), lambda: Gamma(1, 0), lambda: Fixed(0), lambda: Uniform(5, 4),
             lambda: LogNormal(0, 1), lambda: Resampled("azure-conv", "n")],
)
def test_invalid_distributions_are_refused(make):
    with pytest.raises(ValueError):
        make()


def test_decoding_fields_reach_the_trace(check_canonical):
    beams = generate(WorkloadSpec(5, beam_width=4))
    spec = generate(WorkloadSpec(5, spec_tokens=3, spec_accept=0.6))
    check_canonical(beams)
    check_canonical(spec)
    assert (beams["beam_width"] == 4).all() and (beams["spec_tokens"] == 0).all()
    assert (spec["spec_tokens"] == 3).all() and (spec["spec_accept"] == 0.6).all()
    assert "beam_width=4" in beams.attrs["source"]
    assert "beam_width" not in generate(WorkloadSpec(5)).attrs["source"]  # names stay as before


@pytest.mark.parametrize("fields", [{"beam_width": 0}, {"spec_tokens": -1}, {"spec_accept": 1.5},
                                    {"beam_width": 2, "spec_tokens": 2},
                                    {"beam_width": 2, "n": 3}])
def test_bad_decoding_fields_are_refused(fields):
    with pytest.raises(ValueError):
        WorkloadSpec(5, **fields)
