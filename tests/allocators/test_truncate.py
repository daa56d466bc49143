"""truncate: the rollback of rejected speculative tokens, per allocator."""
from __future__ import annotations

import pytest

from allocators import BlockCopy, OutOfKVMemory, make_allocator

BLOCK_POOLS = [
    pytest.param("paged", {"block_size": 4}, id="paged"),
    pytest.param("segmented", {"page_size": 4, "segment_tokens": 16}, id="segmented"),
    pytest.param("hybrid", {"block_size": 4, "segment_tokens": 16}, id="hybrid"),
]


def conserved(alloc) -> bool:
    u = alloc.usage()
    return u.backed == u.live + u.reserved + u.internal + u.cached + u.free


@pytest.mark.parametrize("name, params", BLOCK_POOLS)
def test_truncate_releases_whole_units_past_the_kept_tokens(name, params):
    alloc = make_allocator(name, 64, **params)
    alloc.allocate(0, 6)
    alloc.extend(0, 7)  # 13 tokens: 4 units
    assert len(alloc.layout(0).block_table) == 4
    alloc.truncate(0, 5)  # 2 units: one full, one with 1 token
    assert alloc.length(0) == 5 and len(alloc.layout(0).block_table) == 2
    u = alloc.usage()
    assert (u.live, u.logical, u.reserved) == (5, 5, 3)
    assert conserved(alloc) and not alloc.take_block_copies()
    alloc.extend(0, 2)  # written in place into the kept tail
    assert alloc.length(0) == 7 and len(alloc.layout(0).block_table) == 2


def test_segmented_releases_a_segment_left_empty():
    alloc = make_allocator("segmented", 64, page_size=4, segment_tokens=8)
    alloc.allocate(0, 8)
    alloc.extend(0, 12)  # 20 tokens in 3 segments
    assert len(alloc.segments()) == 3
    alloc.truncate(0, 8)
    assert len(alloc.segments()) == 1 and alloc.usage().backed == 8


@pytest.mark.parametrize("name, params", BLOCK_POOLS)
def test_a_shared_unit_cut_partway_is_copied_not_rewritten(name, params):
    alloc = make_allocator(name, 64, **params)
    alloc.allocate(0, 8)
    alloc.fork(0, 1)
    shared = tuple(alloc.layout(0).block_table)
    alloc.truncate(1, 6)  # cuts the shared second unit: the child reads a copy of 2 tokens
    table = tuple(alloc.layout(1).block_table)
    assert table[0] == shared[0] and table[1] != shared[1]
    assert alloc.take_block_copies() == [BlockCopy(shared[1], table[1], 2)]
    assert tuple(alloc.layout(0).block_table) == shared and alloc.length(0) == 8
    u = alloc.usage()
    assert (u.live, u.logical) == (10, 14) and conserved(alloc)


@pytest.mark.parametrize("name, params", BLOCK_POOLS)
def test_a_copy_without_room_is_out_of_memory_and_changes_nothing(name, params):
    alloc = make_allocator(name, 16, **params)
    alloc.allocate(0, 16)
    alloc.fork(0, 1)
    before = alloc.usage(), alloc.layout(1), alloc.length(1)
    with pytest.raises(OutOfKVMemory):
        alloc.truncate(1, 14)
    assert (alloc.usage(), alloc.layout(1), alloc.length(1)) == before


@pytest.mark.parametrize("name, params", BLOCK_POOLS)
def test_a_cached_prompt_entry_stays_valid_for_its_other_holders(name, params):
    alloc = make_allocator(name, 128, **params)
    hashes = (7, 8)
    alloc.allocate(0, 8, prefix_hashes=hashes, chunk_tokens=4)
    assert alloc.allocate(1, 8, prefix_hashes=hashes, chunk_tokens=4) == 8
    alloc.truncate(1, 6)  # the second entry is cut: seq 1 copies it, seq 0 keeps it
    assert alloc.take_block_copies()
    alloc.free(0)
    alloc.free(1)
    assert alloc.allocate(2, 8, prefix_hashes=hashes, chunk_tokens=4) == 8


@pytest.mark.parametrize("name, params", BLOCK_POOLS)
def test_an_entry_cut_by_its_only_holder_leaves_the_cache(name, params):
    alloc = make_allocator(name, 128, **params)
    hashes = (7, 8)
    alloc.allocate(0, 8, prefix_hashes=hashes, chunk_tokens=4)
    alloc.truncate(0, 6)  # rewritten in place from token 6: its cache entry must go
    assert not alloc.take_block_copies()
    alloc.free(0)
    assert alloc.allocate(1, 8, prefix_hashes=hashes, chunk_tokens=4) == 4


@pytest.mark.parametrize("fit", ["first", "best"])
def test_static_keeps_its_reservation(fit):
    alloc = make_allocator("static", 64, fit=fit, align_tokens=4)
    alloc.allocate(0, 6, final_tokens=20)
    table = tuple(alloc.layout(0).block_table)
    alloc.extend(0, 10)
    alloc.truncate(0, 9)
    assert tuple(alloc.layout(0).block_table) == table and alloc.length(0) == 9
    u = alloc.usage()
    assert (u.live, u.reserved, u.internal) == (9, 11, 0) and conserved(alloc)


@pytest.mark.parametrize("name", ["static", "paged", "segmented", "hybrid"])
def test_misuse_is_a_value_error(name):
    alloc = make_allocator(name, 64)
    alloc.allocate(0, 5)
    for keep in (0, 6):
        with pytest.raises(ValueError):
            alloc.truncate(0, keep)
    with pytest.raises(ValueError):
        alloc.truncate(1, 1)
    alloc.truncate(0, 5)  # keeping everything changes nothing
    assert alloc.length(0) == 5
