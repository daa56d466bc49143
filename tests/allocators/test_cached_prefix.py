"""cached_prefix_tokens: what a router reads of a replica's prefix cache (both tiers). It must
predict the hit that allocate would report for the same prompt, and change nothing."""
from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocators import OutOfKVMemory, make_allocator

CHUNK = 32
PREFIXES = ((1, 2, 3, 4), (1, 2, 5, 6), (7, 8, 9, 10))
CONFIGS = [
    pytest.param("static", {}, id="static"),
    pytest.param("paged", {"block_size": 16}, id="paged"),
    pytest.param("segmented", {"segment_tokens": 128}, id="segmented"),
    pytest.param("hybrid", {"block_size": 8, "segment_tokens": 128}, id="hybrid"),
    # A host tier: entries evicted from the device still count, found past the device's.
    pytest.param("paged", {"block_size": 16, "host_cache_slots": 256}, id="paged-host"),
    pytest.param("segmented", {"segment_tokens": 128, "host_cache_slots": 192},
                 id="segmented-host"),
]
# (prefix family, prompt chunks, free it afterwards)
OPS = st.lists(st.tuples(st.integers(0, 2), st.integers(1, 4), st.booleans()), max_size=12)


@pytest.mark.parametrize("name, params", CONFIGS)
@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_cached_prefix_predicts_the_hit_and_changes_nothing(name, params, ops):
    alloc = make_allocator(name, 512, **params)
    for seq_id, (family, chunks, free) in enumerate(ops):
        try:
            alloc.allocate(seq_id, chunks * CHUNK, prefix_hashes=PREFIXES[family][:chunks],
                           chunk_tokens=CHUNK)
        except OutOfKVMemory:
            continue
        if free:
            alloc.free(seq_id)
    for hashes in PREFIXES:
        before = alloc.usage()
        cached = alloc.cached_prefix_tokens(hashes, CHUNK)
        assert alloc.usage() == before
        probe = copy.deepcopy(alloc)
        try:
            hit = probe.allocate(-1, len(hashes) * CHUNK, prefix_hashes=hashes, chunk_tokens=CHUNK)
        except OutOfKVMemory:
            continue
        assert cached == hit
        if name == "static":
            assert cached == 0


def test_a_cached_prompt_is_found_after_its_request_ends():
    alloc = make_allocator("paged", 1024, block_size=16)
    alloc.allocate(0, 3 * CHUNK, prefix_hashes=(1, 2, 3), chunk_tokens=CHUNK)
    alloc.free(0)
    assert alloc.cached_prefix_tokens((1, 2, 9), CHUNK) == 2 * CHUNK
    assert alloc.cached_prefix_tokens((4,), CHUNK) == 0
    assert alloc.cached_prefix_tokens(None, CHUNK) == 0
