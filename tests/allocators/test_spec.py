"""Allocator specs: defaults build, validate converts and rejects, ranges hold."""
from __future__ import annotations

import pytest

from allocators import SPECS, Allocator, ParamError, make_allocator, spec_of


@pytest.mark.parametrize("name", list(SPECS))
def test_defaults_build_the_allocator_and_match_its_grain(name):
    spec = SPECS[name]
    allocator = spec.build(4096, spec.defaults)
    assert isinstance(allocator, spec.cls) and isinstance(allocator, Allocator)
    assert allocator.block_size == spec.defaults[spec.grain]


@pytest.mark.parametrize("name", list(SPECS))
def test_every_spec_is_frozen_and_names_its_grain(name):
    spec = SPECS[name]
    assert spec.grain in spec.names
    with pytest.raises(AttributeError):
        spec.grain = "other"  # type: ignore[misc]


@pytest.mark.parametrize("name", list(SPECS))
def test_text_values_are_converted_to_the_declared_types(name):
    spec = SPECS[name]
    as_text = {p.name: str(p.default).lower() for p in spec.params}
    assert spec.validate(as_text) == spec.defaults


def test_validate_keeps_only_what_was_given():
    assert SPECS["hybrid"].validate({"block_size": "32"}) == {"block_size": 32}
    assert SPECS["hybrid"].resolve({"block_size": "32"})["segment_tokens"] == 65536


@pytest.mark.parametrize("name, params, match", [
    ("paged", {"block_size": "abc"}, r"allocator paged: block_size='abc' is not an integer; "
                                     r"allowed: an integer in 1\.\.256"),
    ("paged", {"block_size": 0}, r"block_size=0 is below 1"),
    ("paged", {"block_size": 512}, r"block_size=512 is above 256"),
    ("paged", {"block_size": True}, r"block_size=True is not an integer"),
    ("paged", {"nonsense": 1}, r"allocator paged: unknown parameter nonsense=1; allowed: "
                               r"block_size .*enable_prefix_cache"),
    ("paged", {"enable_prefix_cache": "maybe"}, r"is not true or false"),
    ("static", {"fit": "worst"}, r"fit='worst' is not a choice; allowed: one of first, best"),
    ("static", {"max_model_len": 0}, r"max_model_len=0 is below 1"),
    ("hybrid", {"segment_tokens": 8}, r"segment_tokens=8 is below block_size \(16\)"),
    ("segmented", {"page_size": 64, "segment_tokens": 32}, r"segment_tokens=32 is below page_size"),
])
def test_validate_rejects_with_allocator_key_value_and_allowed(name, params, match):
    with pytest.raises(ParamError, match=match):
        SPECS[name].validate(params)


def test_optional_parameters_take_none():
    assert SPECS["static"].validate({"max_model_len": "none"}) == {"max_model_len": None}
    assert SPECS["static"].max_model_len({}) is None
    assert SPECS["static"].max_model_len({"max_model_len": "4096"}) == 4096
    assert SPECS["paged"].max_model_len({}) is None


def test_an_unknown_allocator_is_a_param_error_listing_the_known():
    with pytest.raises(ParamError, match="unknown allocator 'foo'; allocators: static, paged"):
        spec_of("foo")
    with pytest.raises(ParamError, match="unknown parameter"):
        make_allocator("paged", 64, page_size=4)


@pytest.mark.parametrize("name", list(SPECS))
def test_capacity_never_exceeds_the_budget(name):
    spec = SPECS[name]
    for context in (1, 17, 1000, 4096):
        cap = spec.capacity(10_000, context, {})
        assert cap.tokens_per_seq >= context
        assert cap.max_concurrency * cap.tokens_per_seq <= 10_000
        assert cap.largest_context <= 10_000


def test_capacity_follows_the_grain():
    assert SPECS["segmented"].capacity(10_000, 1000, {}).max_concurrency == 10
    paged = SPECS["paged"].capacity(10_000, 1000, {"block_size": 64})
    assert (paged.tokens_per_seq, paged.max_concurrency) == (1024, 156 // 16)
    static = SPECS["static"].capacity(100_000, 1000, {"max_model_len": 32768})
    assert static.max_concurrency == 3
