"""SegmentedAllocator: token pages in on-demand segments, a chunk-grained prefix tree."""
from __future__ import annotations

import pytest

from allocators import OutOfKVMemory, make_allocator
from allocators.segmented import SegmentedAllocator

CHUNK = 8


def observe(alloc, seq_ids=()):
    """Everything a caller can see of the allocator state."""
    layouts = {s: (alloc.layout(s), alloc.length(s)) for s in seq_ids}
    return alloc.usage(), alloc.segments(), layouts


def conserved(alloc) -> bool:
    u = alloc.usage()
    return u.backed == u.live + u.reserved + u.internal + u.cached + u.free


@pytest.fixture
def alloc():
    """4 segments of 16 one-token pages."""
    return SegmentedAllocator(64, segment_tokens=16)


def test_factory_builds_segmented():
    assert isinstance(make_allocator("segmented", 64), SegmentedAllocator)


def test_slots_are_single_token_pages_addressed_by_segment(alloc):
    alloc.allocate(0, 20)
    layout = alloc.layout(0)
    assert (layout.block_size, layout.blocks_per_segment) == (1, 16)
    assert layout.slot_mapping(0, 20) == list(range(20))
    assert alloc.segments() == (0, 1)
    u = alloc.usage()
    assert (u.backed, u.live, u.reserved, u.internal, u.free) == (32, 20, 0, 0, 12)


def test_segments_are_added_on_demand_and_released_when_empty(alloc):
    assert alloc.segments() == () and alloc.usage().backed == 0
    alloc.allocate(0, 16)
    alloc.allocate(1, 16)
    alloc.allocate(2, 1)
    assert alloc.segments() == (0, 1, 2)
    alloc.free(1)
    assert alloc.segments() == (0, 2)
    assert alloc.usage().backed == 32
    alloc.allocate(3, 20)  # the rest of segment 2, then the lowest free id, 1
    assert alloc.segments() == (0, 1, 2)
    assert alloc.layout(3).slot_mapping(0, 20) == list(range(33, 48)) + list(range(16, 21))


def test_slot_ids_stay_valid_when_segments_come_and_go(alloc):
    alloc.allocate(0, 16)
    alloc.allocate(1, 10)
    slots = alloc.layout(1).slot_mapping(0, 10)
    alloc.allocate(2, 30)
    alloc.free(0)
    alloc.extend(1, 3)
    assert alloc.layout(1).slot_mapping(0, 10) == slots
    assert all(s // 16 in alloc.segments() for s in alloc.layout(1).slot_mapping(0, 13))


def test_new_pages_come_from_the_fullest_segment(alloc):
    alloc.allocate(0, 2)  # segment 0: 0-1
    alloc.allocate(1, 14)  # segment 0: 2-15
    alloc.allocate(2, 16)  # segment 1
    alloc.allocate(3, 5)  # segment 2: 32-36
    alloc.free(1)  # segment 0 holds 2 pages, segment 2 holds 5
    alloc.allocate(4, 3)
    assert tuple(alloc.layout(4).block_table) == (37, 38, 39)


def test_the_budget_bounds_segments_and_the_last_may_be_smaller():
    alloc = SegmentedAllocator(40, segment_tokens=16)
    assert alloc.can_allocate(40) and not alloc.can_allocate(41)
    alloc.allocate(0, 40)
    assert alloc.segments() == (0, 1, 2) and alloc.usage().backed == 40
    with pytest.raises(OutOfKVMemory):
        alloc.extend(0)


def test_exhaustion_raises_and_changes_nothing(alloc):
    alloc.allocate(0, 30, prefix_hashes=(1, 2, 3), chunk_tokens=CHUNK)
    alloc.allocate(1, 30)
    before = observe(alloc, (0, 1))
    with pytest.raises(OutOfKVMemory):
        alloc.allocate(2, 30, prefix_hashes=(1, 2, 3), chunk_tokens=CHUNK)  # 24 hit, 6 > 4 free
    with pytest.raises(OutOfKVMemory):
        alloc.extend(1, 5)
    assert observe(alloc, (0, 1)) == before
    alloc.extend(1, 4)


def test_prefix_tree_nodes_are_whole_chunks(alloc):
    alloc.allocate(0, 20, prefix_hashes=(1, 2, 3), chunk_tokens=CHUNK)
    # Nodes of 8 tokens: two full chunks; the third may be partial and is past 20 tokens.
    assert alloc.allocate(1, 30, prefix_hashes=(1, 2, 3), chunk_tokens=CHUNK) == 16
    assert alloc.allocate(2, 15, prefix_hashes=(1, 2, 3), chunk_tokens=CHUNK) == 8
    assert alloc.allocate(3, 30, prefix_hashes=(1, 9, 3), chunk_tokens=CHUNK) == 8
    assert tuple(alloc.layout(3).block_table[:8]) == tuple(alloc.layout(0).block_table[:8])
    u = alloc.usage()
    assert (u.live, u.logical) == (20 + 14 + 7 + 22, 20 + 30 + 15 + 30)
    assert conserved(alloc)


def test_nodes_round_the_chunk_down_to_whole_pages():
    alloc = SegmentedAllocator(128, segment_tokens=64, page_size=4)
    alloc.allocate(0, 30, prefix_hashes=(1, 2, 3), chunk_tokens=10)  # nodes of 8 tokens
    assert alloc.allocate(1, 30, prefix_hashes=(1, 2, 3), chunk_tokens=10) == 24


def test_eviction_takes_leaves_before_their_parent(alloc):
    alloc.allocate(0, 16, prefix_hashes=(1, 2), chunk_tokens=CHUNK)
    alloc.allocate(1, 16, prefix_hashes=(1, 3), chunk_tokens=CHUNK)  # shares node (1,)
    alloc.free(0)
    alloc.free(1)  # LRU: (1, 2), then (1, 3), then their parent (1,)
    assert alloc.usage().cached == 24
    alloc.allocate(2, 48)  # 40 free slots, then one eviction: the oldest leaf
    assert alloc.usage().cached == 16
    alloc.free(2)
    assert alloc.allocate(3, 16, prefix_hashes=(1, 3), chunk_tokens=CHUNK) == 16
    assert alloc.allocate(4, 16, prefix_hashes=(1, 2), chunk_tokens=CHUNK) == 8


def test_a_parent_outlives_a_child_it_was_hit_without():
    alloc = SegmentedAllocator(32, segment_tokens=16)
    alloc.allocate(0, 16, prefix_hashes=(1, 2), chunk_tokens=CHUNK)
    alloc.free(0)
    alloc.allocate(1, 8, prefix_hashes=(1,), chunk_tokens=CHUNK)  # touches (1,) only
    alloc.free(1)
    alloc.allocate(2, 24)  # 16 free + one eviction: the child, though touched earlier
    assert alloc.allocate(3, 8, prefix_hashes=(1,), chunk_tokens=CHUNK) == 8


def test_a_cached_node_keeps_its_segment_alive(alloc):
    alloc.allocate(0, 8, prefix_hashes=(1,), chunk_tokens=CHUNK)
    alloc.allocate(1, 20)
    alloc.free(0)
    alloc.free(1)
    assert alloc.segments() == (0,)
    u = alloc.usage()
    assert (u.backed, u.cached, u.free) == (16, 8, 8)


def test_fork_shares_every_page_without_copying(alloc):
    alloc.allocate(0, 5)
    alloc.fork(0, 1)
    alloc.extend(1, 2)
    alloc.extend(0, 1)
    assert tuple(alloc.layout(1).block_table) == (0, 1, 2, 3, 4, 5, 6)
    assert tuple(alloc.layout(0).block_table) == (0, 1, 2, 3, 4, 7)
    u = alloc.usage()
    assert (u.live, u.logical) == (8, 13)


def test_fork_with_larger_pages_copies_the_partial_tail():
    alloc = SegmentedAllocator(64, segment_tokens=16, page_size=4)
    alloc.allocate(0, 6, final_tokens=8)
    alloc.fork(0, 1)
    alloc.extend(0, 2)
    assert tuple(alloc.layout(0).block_table) == (0, 2)
    assert tuple(alloc.layout(1).block_table) == (0, 1)
    u = alloc.usage()
    assert (u.live, u.logical, u.reserved, u.internal) == (10, 14, 2, 0)
    assert conserved(alloc)


def test_a_node_half_shared_by_a_fork_stays_private():
    alloc = SegmentedAllocator(64, segment_tokens=16)
    alloc.allocate(0, 4, prefix_hashes=(1, 2), chunk_tokens=CHUNK)
    alloc.fork(0, 1)
    alloc.extend(0, 4)  # completes node (1,) with pages seq 1 still shares in part
    assert alloc.allocate(2, 8, prefix_hashes=(1, 2), chunk_tokens=CHUNK) == 0
    own = tuple(alloc.layout(2).block_table)  # seq 2 computed node (1,) itself and caches it
    for seq in (0, 1, 2):
        alloc.free(seq)
    u = alloc.usage()
    assert (u.cached, u.live, u.free) == (8, 0, 8)
    assert alloc.allocate(3, 8, prefix_hashes=(1, 2), chunk_tokens=CHUNK) == 8
    assert tuple(alloc.layout(3).block_table) == own


def test_misuse_is_a_value_error():
    with pytest.raises(ValueError):
        SegmentedAllocator(64, page_size=0)
    with pytest.raises(ValueError):
        SegmentedAllocator(64, segment_tokens=4, page_size=8)
    alloc = SegmentedAllocator(64, segment_tokens=16)
    with pytest.raises(ValueError):
        alloc.extend(0)
    with pytest.raises(ValueError):
        alloc.allocate(0, -3)
    assert observe(alloc) == (alloc.usage(), (), {})


def test_drain_releases_every_segment_without_a_cache():
    alloc = SegmentedAllocator(64, segment_tokens=16, enable_prefix_cache=False)
    alloc.allocate(0, 30, prefix_hashes=(1, 2), chunk_tokens=CHUNK)
    alloc.fork(0, 1)
    alloc.extend(1, 9)
    alloc.free(0)
    alloc.free(1)
    assert alloc.segments() == ()
    assert alloc.usage().backed == 0


def test_a_freed_sequence_returns_its_pages_to_every_segment_it_spanned(alloc):
    alloc.allocate(0, 40)  # segments 0 and 1, pages 32-39 of segment 2
    alloc.allocate(1, 10)  # pages 40-47 of segment 2, 48-49 of segment 3
    alloc.free(0)  # segments 0 and 1 are empty: released
    assert alloc.segments() == (2, 3)
    alloc.allocate(2, 20)  # the fullest segment (2) first, then 3
    assert tuple(alloc.layout(2).block_table) == tuple(range(32, 40)) + tuple(range(50, 62))
    alloc.free(1)  # now segment 3 is the fullest: 12 pages used against 8
    alloc.allocate(3, 11)
    assert tuple(alloc.layout(3).block_table) == (48, 49, 62, 63) + tuple(range(40, 47))
    assert conserved(alloc)


def test_decode_pages_come_from_live_segments_before_a_new_one(alloc):
    alloc.allocate(0, 16)  # segment 0
    alloc.allocate(1, 16)  # segment 1
    alloc.allocate(2, 3)  # segment 2: pages 32-34
    alloc.free(0)
    alloc.extend(1)  # a full tail: the next page comes from segment 2, which has free ones
    assert alloc.layout(1).block_table[-1] == 35
    alloc.allocate(3, 12)  # pages 36-47: every live segment is full
    alloc.extend(3)  # a new segment, the lowest free id
    assert alloc.layout(3).block_table[-1] == 0
    assert alloc.segments() == (0, 1, 2)


def test_decoding_page_by_page_equals_one_extend():
    stepped, whole = (SegmentedAllocator(256, segment_tokens=32) for _ in range(2))
    for alloc in (stepped, whole):
        alloc.allocate(1, 20)
        alloc.allocate(0, 7, final_tokens=50)
        alloc.free(1)
    for _ in range(60):
        stepped.extend(0)
    whole.extend(0, 60)
    assert observe(stepped, (0,)) == observe(whole, (0,))
