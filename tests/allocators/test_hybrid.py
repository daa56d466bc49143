"""HybridAllocator: paged blocks inside segments added on demand and released when empty."""
from __future__ import annotations

import pytest

from allocators import OutOfKVMemory, make_allocator
from allocators.hybrid import HybridAllocator


def observe(alloc, seq_ids=()):
    """Everything a caller can see of the allocator state."""
    layouts = {s: (alloc.layout(s), alloc.length(s)) for s in seq_ids}
    return alloc.usage(), alloc.segments(), layouts


def conserved(alloc) -> bool:
    u = alloc.usage()
    return u.backed == u.live + u.reserved + u.internal + u.cached + u.free


@pytest.fixture
def alloc():
    """4 segments of 4 blocks of 4 slots."""
    return HybridAllocator(64, block_size=4, segment_tokens=16)


def test_factory_builds_hybrid():
    made = make_allocator("hybrid", 64, block_size=4, segment_tokens=16)
    assert isinstance(made, HybridAllocator)


def test_nothing_is_backed_until_needed(alloc):
    u = alloc.usage()
    assert (u.budget, u.backed, u.free) == (64, 0, 0)
    assert alloc.segments() == ()
    assert alloc.can_allocate(64) and not alloc.can_allocate(65)


def test_segments_are_added_on_demand(alloc):
    alloc.allocate(0, 10)
    assert alloc.segments() == (0,)
    assert tuple(alloc.layout(0).block_table) == (0, 1, 2)
    assert alloc.usage().backed == 16
    alloc.allocate(1, 8)  # the last block of segment 0, then a new segment
    assert alloc.segments() == (0, 1)
    assert tuple(alloc.layout(1).block_table) == (3, 4)
    u = alloc.usage()
    assert (u.backed, u.live, u.free) == (32, 18, 12)
    assert conserved(alloc)


def test_slot_ids_stay_valid_when_segments_are_added(alloc):
    alloc.allocate(0, 14)
    before = alloc.layout(0).slot_mapping(0, 14)
    alloc.allocate(1, 40)
    assert alloc.segments() == (0, 1, 2, 3)
    layout = alloc.layout(0)
    assert layout.slot_mapping(0, 14) == before
    assert layout.blocks_per_segment == 4
    segments = [layout.segment_of(b) for b in alloc.layout(1).block_table]
    assert segments == [1] * 4 + [2] * 4 + [3] * 2


def test_an_empty_segment_is_released_and_its_id_reused(alloc):
    alloc.allocate(0, 16)
    alloc.allocate(1, 16)
    alloc.allocate(2, 4)
    assert alloc.segments() == (0, 1, 2)
    alloc.free(0)
    assert alloc.segments() == (1, 2)
    assert alloc.usage().backed == 32
    alloc.allocate(3, 16)  # fills segment 2's 3 free blocks, then adds the lowest free id: 0
    assert alloc.segments() == (0, 1, 2)
    assert tuple(alloc.layout(3).block_table) == (9, 10, 11, 0)


def test_a_cached_block_keeps_its_segment(alloc):
    alloc.allocate(0, 8, prefix_hashes=(5,), chunk_tokens=8)
    alloc.free(0)
    u = alloc.usage()
    assert alloc.segments() == (0,)
    assert (u.backed, u.cached, u.free) == (16, 8, 8)


def test_a_new_segment_is_added_before_the_cache_is_evicted(alloc):
    alloc.allocate(0, 16, prefix_hashes=(1, 2), chunk_tokens=8)
    alloc.free(0)
    alloc.allocate(1, 4)
    assert alloc.segments() == (0, 1) and alloc.usage().cached == 16
    assert alloc.allocate(2, 16, prefix_hashes=(1, 2), chunk_tokens=8) == 16


def test_evicting_the_cache_releases_its_segment(alloc):
    alloc.allocate(0, 16, prefix_hashes=(1, 2), chunk_tokens=8)
    alloc.allocate(1, 48)
    alloc.free(0)
    alloc.free(1)  # segment 0 holds 4 cached blocks, the others are released
    assert alloc.segments() == (0,)
    alloc.allocate(2, 64)  # needs every block: the cache is evicted, its segment reused
    assert alloc.segments() == (0, 1, 2, 3) and alloc.usage().cached == 0
    alloc.free(2)
    assert alloc.segments() == ()
    assert alloc.usage().backed == 0


def test_new_blocks_come_from_the_fullest_segment(alloc):
    alloc.allocate(0, 4)  # segment 0: block 0
    alloc.allocate(1, 12)  # segment 0: blocks 1-3
    alloc.allocate(2, 16)  # segment 1
    alloc.allocate(3, 12)  # segment 2: blocks 8-10
    alloc.free(1)  # segment 0 holds 1 block, segment 2 holds 3
    alloc.allocate(4, 4)
    assert tuple(alloc.layout(4).block_table) == (11,)  # not block 1, the lowest free id
    alloc.allocate(5, 4)
    assert tuple(alloc.layout(5).block_table) == (1,)


def test_a_budget_that_is_not_a_multiple_gives_a_smaller_last_segment():
    alloc = HybridAllocator(40, block_size=4, segment_tokens=16)
    alloc.allocate(0, 40)
    assert alloc.segments() == (0, 1, 2)
    assert alloc.usage().backed == 40
    assert tuple(alloc.layout(0).block_table[-2:]) == (8, 9)
    assert not alloc.can_allocate(1)


def test_a_segment_holds_whole_blocks_only():
    alloc = HybridAllocator(64, block_size=4, segment_tokens=18)
    alloc.allocate(0, 5)
    assert alloc.layout(0).blocks_per_segment == 4
    assert alloc.usage().backed == 16


def test_exhaustion_raises_and_changes_nothing(alloc):
    alloc.allocate(0, 30)
    alloc.allocate(1, 30)
    before = observe(alloc, (0, 1))
    assert not alloc.can_allocate(5)
    with pytest.raises(OutOfKVMemory):
        alloc.allocate(2, 5)
    with pytest.raises(OutOfKVMemory):
        alloc.extend(0, 7)
    assert observe(alloc, (0, 1)) == before


def test_misuse_is_a_value_error():
    with pytest.raises(ValueError):
        HybridAllocator(64, block_size=0)
    with pytest.raises(ValueError):
        HybridAllocator(64, block_size=300)
    with pytest.raises(ValueError):
        HybridAllocator(64, block_size=16, segment_tokens=8)
    alloc = HybridAllocator(64, block_size=4, segment_tokens=16)
    alloc.allocate(0, 4)
    with pytest.raises(ValueError):
        alloc.allocate(0, 4)
    with pytest.raises(ValueError):
        alloc.free(1)


def test_fork_copy_on_write_and_prefix_hits_work_as_in_paged(alloc):
    alloc.allocate(0, 6, final_tokens=8, prefix_hashes=(7,), chunk_tokens=4)
    alloc.fork(0, 1)
    alloc.extend(1, 2)
    assert tuple(alloc.layout(0).block_table) == (0, 1)
    assert tuple(alloc.layout(1).block_table) == (0, 2)
    assert alloc.allocate(2, 5, prefix_hashes=(7,), chunk_tokens=4) == 4
    assert alloc.layout(2).block_table[0] == 0
    u = alloc.usage()
    assert (u.live, u.logical) == (6 + 4 + 1, 6 + 8 + 5)
    assert conserved(alloc)


def test_a_decode_block_comes_from_the_fullest_live_segment(alloc):
    alloc.allocate(0, 16)  # segment 0 full
    alloc.allocate(1, 4)  # segment 1: block 4
    alloc.extend(0)  # the tail is full: a new block from segment 1, not a new segment
    assert tuple(alloc.layout(0).block_table) == (0, 1, 2, 3, 5)
    assert alloc.segments() == (0, 1)
    alloc.allocate(2, 8)  # blocks 6, 7: every live segment is full
    alloc.extend(2)
    alloc.extend(2)  # the partly written new block takes the second token in place
    assert tuple(alloc.layout(2).block_table) == (6, 7, 8)
    assert alloc.segments() == (0, 1, 2)
    u = alloc.usage()
    assert (u.live, u.reserved, u.free) == (31, 5, 12)
    assert conserved(alloc)
