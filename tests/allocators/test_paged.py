"""PagedAllocator: blocks from one preallocated pool, hash-chained prefix cache, copy-on-write."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocators import OutOfKVMemory, make_allocator
from allocators.paged import PagedAllocator

HASHES = (101, 102, 103)  # chunk hashes of a shared 3-chunk prompt
CHUNK = 8


def observe(alloc, seq_ids=()):
    """Everything a caller can see of the allocator state."""
    layouts = {s: (alloc.layout(s), alloc.length(s)) for s in seq_ids}
    return alloc.usage(), alloc.segments(), layouts


def conserved(alloc) -> bool:
    u = alloc.usage()
    return u.backed == u.live + u.reserved + u.internal + u.cached + u.free


def test_factory_builds_paged():
    assert isinstance(make_allocator("paged", 64, block_size=8), PagedAllocator)


def test_whole_pool_is_backed_from_the_start():
    alloc = PagedAllocator(70, block_size=16)  # 4 whole blocks
    u = alloc.usage()
    assert (u.budget, u.backed, u.free, u.largest_free_run) == (70, 64, 64, 64)
    assert alloc.segments() == (0,)
    assert u.utilization == 0.0 and u.external_fragmentation == 0.0


def test_allocate_extend_free_accounting():
    alloc = PagedAllocator(64, block_size=4)
    assert alloc.allocate(0, 6, final_tokens=10) == 0
    assert tuple(alloc.layout(0).block_table) == (0, 1)
    u = alloc.usage()
    assert (u.live, u.logical, u.reserved, u.internal, u.free) == (6, 6, 2, 0, 56)
    alloc.extend(0, 4)  # tokens 6..9: fills block 1, opens block 2 with 2 of 4 written
    assert tuple(alloc.layout(0).block_table) == (0, 1, 2) and alloc.length(0) == 10
    u = alloc.usage()
    assert (u.live, u.reserved, u.internal, u.free) == (10, 0, 2, 52)  # past final: internal
    assert conserved(alloc)
    alloc.free(0)
    u = alloc.usage()
    assert (u.live, u.logical, u.reserved, u.internal, u.cached, u.free) == (0, 0, 0, 0, 0, 64)


def test_unknown_final_length_counts_the_tail_as_reserved():
    alloc = PagedAllocator(64, block_size=16)
    alloc.allocate(0, 5)
    u = alloc.usage()
    assert (u.reserved, u.internal) == (11, 0)


def test_blocks_come_lowest_id_first_and_are_reused():
    alloc = PagedAllocator(64, block_size=4)
    alloc.allocate(0, 8)
    alloc.allocate(1, 4)
    alloc.free(0)
    alloc.allocate(2, 5)
    assert tuple(alloc.layout(2).block_table) == (0, 1)
    assert tuple(alloc.layout(1).block_table) == (2,)


def test_layout_slot_mapping_addresses_block_slots():
    alloc = PagedAllocator(64, block_size=4)
    alloc.allocate(0, 4)
    alloc.allocate(1, 3)
    alloc.extend(0, 3)
    layout = alloc.layout(0)
    assert tuple(layout.block_table) == (0, 2)
    assert layout.blocks_per_segment == 16
    assert layout.slot_mapping(0, 7) == [0, 1, 2, 3, 8, 9, 10]
    assert {layout.segment_of(b) for b in layout.block_table} == {0}


def test_exhaustion_raises_and_changes_nothing():
    alloc = PagedAllocator(36, block_size=4)
    alloc.allocate(0, 20)
    alloc.allocate(1, 10)  # 8 of 9 blocks used; seq 1's last block has 2 free slots
    before = observe(alloc, (0, 1))
    assert not alloc.can_allocate(5)
    with pytest.raises(OutOfKVMemory):
        alloc.allocate(2, 5)
    with pytest.raises(OutOfKVMemory):
        alloc.extend(1, 7)  # 2 slots in the tail + 1 block is 6 < 7
    assert observe(alloc, (0, 1)) == before
    alloc.extend(1, 6)
    assert alloc.usage().free == 0


def test_misuse_is_a_value_error():
    with pytest.raises(ValueError):
        PagedAllocator(64, block_size=0)
    with pytest.raises(ValueError):
        PagedAllocator(64, block_size=257)
    with pytest.raises(ValueError):
        PagedAllocator(-1)
    alloc = PagedAllocator(64, block_size=4)
    alloc.allocate(0, 4)
    before = observe(alloc, (0,))
    for call in (
        lambda: alloc.allocate(0, 4),
        lambda: alloc.allocate(1, 0),
        lambda: alloc.allocate(1, 8, final_tokens=4),
        lambda: alloc.extend(9),
        lambda: alloc.extend(0, -1),
        lambda: alloc.fork(9, 1),
        lambda: alloc.fork(0, 0),
        lambda: alloc.free(9),
        lambda: alloc.layout(9),
        lambda: alloc.length(9),
    ):
        with pytest.raises(ValueError):
            call()
    assert observe(alloc, (0,)) == before


def test_prefix_hit_shares_full_blocks_once():
    alloc = PagedAllocator(128, block_size=4)
    assert alloc.allocate(0, 20, prefix_hashes=HASHES, chunk_tokens=CHUNK) == 0
    hit = alloc.allocate(1, 22, prefix_hashes=HASHES, chunk_tokens=CHUNK)
    # The third chunk may be partial, so it is cached only within seq 0's 20 tokens: 5 blocks.
    assert hit == 20
    assert tuple(alloc.layout(1).block_table[:5]) == tuple(alloc.layout(0).block_table)
    u = alloc.usage()
    assert (u.live, u.logical) == (22, 42)
    assert u.logical / u.live == pytest.approx(42 / 22)
    assert conserved(alloc)


def test_hit_never_exceeds_the_request_and_needs_equal_chain():
    alloc = PagedAllocator(128, block_size=4)
    alloc.allocate(0, 24, prefix_hashes=HASHES, chunk_tokens=CHUNK)
    assert alloc.allocate(1, 6, prefix_hashes=HASHES, chunk_tokens=CHUNK) == 4
    assert alloc.allocate(2, 24, prefix_hashes=(101, 999, 103), chunk_tokens=CHUNK) == 8
    assert alloc.allocate(3, 24, prefix_hashes=HASHES[:1], chunk_tokens=CHUNK) == 8
    assert alloc.allocate(4, 24) == 0


def test_freed_prefix_is_cached_then_hit():
    alloc = PagedAllocator(128, block_size=4)
    alloc.allocate(0, 24, prefix_hashes=HASHES, chunk_tokens=CHUNK)
    blocks = tuple(alloc.layout(0).block_table)
    alloc.free(0)
    u = alloc.usage()
    assert (u.live, u.cached, u.free) == (0, 24, 104)
    assert alloc.allocate(1, 26, prefix_hashes=HASHES, chunk_tokens=CHUNK) == 24
    assert tuple(alloc.layout(1).block_table[:6]) == blocks
    u = alloc.usage()
    assert (u.live, u.cached) == (26, 0)
    assert conserved(alloc)


def test_later_prefill_chunk_registers_its_blocks():
    alloc = PagedAllocator(128, block_size=4)
    alloc.allocate(0, 4, prefix_hashes=HASHES, chunk_tokens=CHUNK)  # chunked prefill: 4 first
    alloc.extend(0, 12)  # the rest of the two full chunks
    assert alloc.allocate(1, 24, prefix_hashes=HASHES, chunk_tokens=CHUNK) == 16


def test_cache_disabled_never_hits():
    alloc = PagedAllocator(128, block_size=4, enable_prefix_cache=False)
    alloc.allocate(0, 24, prefix_hashes=HASHES, chunk_tokens=CHUNK)
    assert alloc.allocate(1, 24, prefix_hashes=HASHES, chunk_tokens=CHUNK) == 0
    alloc.free(0)
    assert alloc.usage().cached == 0


def test_lru_evicts_the_least_recently_released_block_first():
    alloc = PagedAllocator(32, block_size=4)  # 8 blocks
    alloc.allocate(0, 8, prefix_hashes=(1,), chunk_tokens=CHUNK)
    alloc.allocate(1, 8, prefix_hashes=(2,), chunk_tokens=CHUNK)
    alloc.free(0)  # seq 0's two blocks are older in the LRU than seq 1's
    alloc.free(1)
    alloc.allocate(2, 16)  # the 4 free blocks
    alloc.allocate(3, 4)  # evicts seq 0's last block, then nothing else
    assert alloc.usage().cached == 12
    alloc.free(2)
    alloc.free(3)
    assert alloc.allocate(4, 8, prefix_hashes=(2,), chunk_tokens=CHUNK) == 8
    assert alloc.allocate(5, 8, prefix_hashes=(1,), chunk_tokens=CHUNK) == 4  # tail was evicted


def test_a_hit_refreshes_lru_position():
    alloc = PagedAllocator(24, block_size=4)  # 6 blocks
    alloc.allocate(0, 4, prefix_hashes=(1,), chunk_tokens=4)
    alloc.allocate(1, 4, prefix_hashes=(2,), chunk_tokens=4)
    alloc.free(0)
    alloc.free(1)
    alloc.allocate(2, 4, prefix_hashes=(1,), chunk_tokens=4)  # takes (1,) out of the LRU
    alloc.free(2)  # (1,) is now the newest
    alloc.allocate(3, 20)  # 4 free blocks + 1 eviction: the (2,) block
    assert alloc.allocate(4, 4, prefix_hashes=(1,), chunk_tokens=4) == 4
    alloc.free(4)
    alloc.free(3)
    assert alloc.allocate(5, 4, prefix_hashes=(2,), chunk_tokens=4) == 0


def test_failed_allocate_keeps_lru_order_and_cache():
    def scenario():
        alloc = PagedAllocator(32, block_size=4)
        for seq, h in enumerate((1, 2, 3)):
            alloc.allocate(seq, 8, prefix_hashes=(h,), chunk_tokens=CHUNK)
        for seq in range(3):
            alloc.free(seq)
        alloc.allocate(10, 8)  # 2 free blocks left, 6 cached
        return alloc

    alloc, twin = scenario(), scenario()
    with pytest.raises(OutOfKVMemory):  # would hit (2,) and evict everything else
        alloc.allocate(20, 40, prefix_hashes=(2,), chunk_tokens=CHUNK)
    assert observe(alloc, (10,)) == observe(twin, (10,))
    for a in (alloc, twin):
        a.allocate(11, 8)  # evicts the two (1,) blocks, the oldest
    assert observe(alloc, (10, 11)) == observe(twin, (10, 11))
    for a in (alloc, twin):
        assert a.allocate(12, 8, prefix_hashes=(2,), chunk_tokens=CHUNK) == 8
        assert a.allocate(13, 8, prefix_hashes=(1,), chunk_tokens=CHUNK) == 0


def test_fork_shares_blocks_and_copies_the_partial_tail_on_write():
    alloc = PagedAllocator(64, block_size=4)
    alloc.allocate(0, 6, final_tokens=12)
    alloc.fork(0, 1)
    assert alloc.layout(1) == alloc.layout(0)
    u = alloc.usage()
    assert (u.live, u.logical, u.reserved) == (6, 12, 2)  # the shared tail counted once
    alloc.extend(1, 1)  # copy-on-write: block 1 stays seq 0's, seq 1 gets a copy
    assert tuple(alloc.layout(0).block_table) == (0, 1)
    assert tuple(alloc.layout(1).block_table) == (0, 2)
    u = alloc.usage()
    assert (u.live, u.logical, u.reserved, u.internal) == (9, 13, 3, 0)
    alloc.extend(0, 1)  # block 1 is now seq 0's alone: written in place
    assert tuple(alloc.layout(0).block_table) == (0, 1)
    assert conserved(alloc)
    alloc.free(0)
    alloc.free(1)
    assert alloc.usage().free == 64


def test_fork_of_a_full_tail_copies_nothing():
    alloc = PagedAllocator(64, block_size=4)
    alloc.allocate(0, 8)
    alloc.fork(0, 1)
    alloc.extend(1, 1)
    alloc.extend(0, 1)
    assert tuple(alloc.layout(1).block_table) == (0, 1, 2)
    assert tuple(alloc.layout(0).block_table) == (0, 1, 3)
    assert alloc.usage().live == 10


def test_copy_on_write_needs_a_block_and_fails_atomically():
    alloc = PagedAllocator(8, block_size=4)
    alloc.allocate(0, 6)  # the pool is full
    alloc.fork(0, 1)
    before = observe(alloc, (0, 1))
    with pytest.raises(OutOfKVMemory):
        alloc.extend(1, 1)
    assert observe(alloc, (0, 1)) == before
    alloc.free(0)
    alloc.extend(1, 1)  # the tail is no longer shared: written in place
    assert tuple(alloc.layout(1).block_table) == (0, 1)


def test_forks_keep_cached_prefix_referenced():
    alloc = PagedAllocator(64, block_size=4)
    alloc.allocate(0, 16, prefix_hashes=HASHES, chunk_tokens=CHUNK)
    alloc.fork(0, 1)
    alloc.free(0)
    assert alloc.usage().cached == 0  # seq 1 still holds every block
    alloc.free(1)
    assert alloc.usage().cached == 16


def test_drain_leaves_the_whole_pool_usable():
    alloc = PagedAllocator(64, block_size=4)
    alloc.allocate(0, 30, prefix_hashes=HASHES, chunk_tokens=CHUNK)
    alloc.fork(0, 1)
    alloc.extend(1, 5)
    alloc.allocate(2, 17, prefix_hashes=HASHES, chunk_tokens=CHUNK)
    for seq in (0, 1, 2):
        alloc.free(seq)
    u = alloc.usage()
    assert (u.live, u.logical, u.reserved, u.internal) == (0, 0, 0, 0)
    assert u.cached + u.free == 64
    assert alloc.can_allocate(64)
    alloc.allocate(3, 64)
    assert alloc.usage().live == 64 and alloc.usage().cached == 0


def test_decode_writes_reserved_slots_before_internal_ones():
    alloc = PagedAllocator(64, block_size=4)
    alloc.allocate(0, 1, final_tokens=2)
    u = alloc.usage()
    assert (u.reserved, u.internal) == (1, 2)
    alloc.extend(0)  # the last reserved slot
    u = alloc.usage()
    assert (u.reserved, u.internal) == (0, 2)
    alloc.extend(0)
    alloc.extend(0)  # the block is full: nothing unwritten is left
    u = alloc.usage()
    assert (u.live, u.reserved, u.internal, u.free) == (4, 0, 0, 60)
    alloc.extend(0)  # a new block, all past the final length
    u = alloc.usage()
    assert (u.live, u.reserved, u.internal) == (5, 0, 3)
    assert tuple(alloc.layout(0).block_table) == (0, 1)


@settings(max_examples=60, deadline=None)
@given(
    block_size=st.sampled_from([1, 4, 16]),
    prompt=st.integers(1, 40),
    extra=st.one_of(st.none(), st.integers(0, 40)),
    tokens=st.integers(1, 40),
    neighbour=st.integers(0, 20),
)
def test_decoding_token_by_token_equals_one_extend(block_size, prompt, extra, tokens, neighbour):
    """The decode step's quick path leaves exactly what the general path does."""
    final = None if extra is None else prompt + extra
    stepped, whole = (PagedAllocator(256, block_size=block_size) for _ in range(2))
    for alloc in (stepped, whole):
        if neighbour:
            alloc.allocate(1, neighbour)
        alloc.allocate(0, prompt, final_tokens=final)
    for _ in range(tokens):
        stepped.extend(0)
    whole.extend(0, tokens)
    seqs = (0, 1) if neighbour else (0,)
    assert observe(stepped, seqs) == observe(whole, seqs)
