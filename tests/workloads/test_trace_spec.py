"""A trace spec loads exactly the slice it describes, carries itself in attrs, and rejects
values that describe no slice."""
from __future__ import annotations

import pytest

from workloads import TraceSpec, TraceSpecError, load_trace, scale_rate, take


def test_a_spec_loads_the_slice_it_describes():
    spec = TraceSpec("azure-conv", start=10, max_requests=25, rate_scale=2.0)
    trace = spec.load()
    expected = scale_rate(take(load_trace("azure-conv"), 25, 10), 2.0)
    assert trace[["arrival_s", "prompt_tokens", "output_tokens"]].equals(
        expected[["arrival_s", "prompt_tokens", "output_tokens"]])
    assert trace.attrs["spec"] == spec.to_dict()
    assert TraceSpec.from_dict(trace.attrs["spec"]) == spec


def test_a_frame_cut_from_a_loaded_one_no_longer_claims_its_spec():
    assert "spec" not in take(TraceSpec("azure-conv", max_requests=10).load(), 5).attrs


@pytest.mark.parametrize("field, value", [("rate_scale", 0.0), ("rate_scale", float("nan")),
                                          ("start", -1), ("max_requests", 0),
                                          ("duration_s", 0.0), ("cap_lengths_to", 1)])
def test_values_that_describe_no_slice_are_errors_naming_the_field(field, value):
    with pytest.raises(TraceSpecError, match=f"trace.{field}"):
        TraceSpec(**{field: value})


def test_unknown_fields_are_errors():
    with pytest.raises(TraceSpecError, match="unknown field"):
        TraceSpec.from_dict({"source": "azure-conv", "requests": 5})
