"""The host tier of the prefix cache: what moves to the host on eviction, what comes back on a hit,
which entries the bounded tier keeps, and the errors of a tier that cannot be built."""
from __future__ import annotations

import pytest

from allocators import ParamError, make_allocator
from allocators.host_tier import HostTier

CHUNK = 16


def prompt(family: int, chunks: int) -> tuple[int, ...]:
    return tuple(100 * family + i for i in range(chunks))


def allocate(alloc, seq_id: int, hashes: tuple[int, ...]) -> int:
    return alloc.allocate(seq_id, len(hashes) * CHUNK, prefix_hashes=hashes, chunk_tokens=CHUNK)


@pytest.mark.parametrize("name, params", [
    ("paged", {"block_size": 16}),
    ("segmented", {"segment_tokens": 64}),
    ("hybrid", {"block_size": 8, "segment_tokens": 64}),
])
def test_an_evicted_prompt_comes_back_from_the_host_into_the_units_it_left(name, params):
    alloc = make_allocator(name, 64, host_cache_slots=128, **params)
    allocate(alloc, 0, prompt(1, 4))
    first = tuple(alloc.layout(0).block_table)
    alloc.free(0)
    assert alloc.take_host_copies() == []  # nothing evicted yet
    allocate(alloc, 1, prompt(2, 4))  # the whole budget: prompt 1 leaves the device
    (offload,) = alloc.take_host_copies()
    assert offload.to_host and sorted(offload.units) == sorted(first)
    where = dict(zip(offload.units, offload.host_blocks))  # device unit -> its host block
    alloc.free(1)
    assert alloc.cached_prefix_tokens(prompt(1, 4), CHUNK) == 4 * CHUNK

    assert allocate(alloc, 2, prompt(1, 4)) == 4 * CHUNK
    copies = alloc.take_host_copies()
    assert [c.to_host for c in copies] == [True, False]  # prompt 2 goes to make room first
    restore = copies[1]
    assert restore.units == tuple(alloc.layout(2).block_table)
    assert restore.host_blocks == tuple(where[unit] for unit in first)  # token order kept
    assert set(copies[0].host_blocks).isdisjoint(restore.host_blocks)


def test_the_tier_is_inclusive_a_restored_entry_is_not_copied_out_again():
    alloc = make_allocator("paged", 64, block_size=16, host_cache_slots=128)
    allocate(alloc, 0, prompt(1, 4))
    alloc.free(0)
    allocate(alloc, 1, prompt(2, 4))
    alloc.free(1)
    allocate(alloc, 2, prompt(1, 4))  # back from the host; prompt 2 leaves the device
    alloc.free(2)
    alloc.take_host_copies()
    allocate(alloc, 3, prompt(2, 4))  # prompt 1 leaves the device again: it is on the host
    copies = alloc.take_host_copies()
    assert [c.to_host for c in copies] == [False]


def test_host_hits_are_pinned_while_the_evictions_of_their_own_allocation_run():
    """The tier holds exactly the prompt hit on it; the device entries evicted to make room for
    it do not fit beside it, so they are dropped rather than written over the blocks read."""
    alloc = make_allocator("paged", 64, block_size=16, host_cache_slots=64)
    allocate(alloc, 0, prompt(1, 4))
    alloc.free(0)
    allocate(alloc, 1, prompt(2, 4))
    alloc.free(1)
    (offload,) = alloc.take_host_copies()
    assert allocate(alloc, 2, prompt(1, 4)) == 4 * CHUNK
    (restore,) = alloc.take_host_copies()
    assert not restore.to_host and restore.host_blocks == offload.host_blocks[::-1]
    assert alloc.cached_prefix_tokens(prompt(2, 4), CHUNK) == 0


def test_a_hit_walks_the_device_then_the_host_and_counts_both():
    alloc = make_allocator("paged", 96, block_size=16, host_cache_slots=64)
    allocate(alloc, 0, prompt(1, 4))
    alloc.free(0)
    allocate(alloc, 1, prompt(2, 4))  # evicts prompt 1's last two blocks (leaves first)
    alloc.free(1)
    (offload,) = alloc.take_host_copies()
    assert len(offload.units) == 2
    assert alloc.cached_prefix_tokens(prompt(1, 4), CHUNK) == 4 * CHUNK
    assert allocate(alloc, 2, prompt(1, 4)) == 4 * CHUNK
    restore = alloc.take_host_copies()[-1]
    assert not restore.to_host and restore.host_blocks == offload.host_blocks[::-1]
    assert restore.units == tuple(alloc.layout(2).block_table[2:])


def test_without_a_tier_nothing_is_copied_and_evicted_prompts_are_lost():
    alloc = make_allocator("paged", 64, block_size=16)
    assert alloc.host_tier_blocks == 0
    allocate(alloc, 0, prompt(1, 4))
    alloc.free(0)
    allocate(alloc, 1, prompt(2, 4))
    alloc.free(1)
    assert alloc.take_host_copies() == []
    assert alloc.cached_prefix_tokens(prompt(1, 4), CHUNK) == 0
    assert allocate(alloc, 2, prompt(1, 4)) == 0


def test_host_lru_keeps_the_shallowest_entries_of_an_eviction_that_does_not_fit():
    tier = HostTier(3)
    units, blocks = tier.store([14, 13, 12, 11], [(4,), (3,), (2,), (1,)])  # deepest first
    assert units == [3, 2, 1] and blocks == [0, 1, 2]
    assert tier.match([11, 12, 13, 14]) == [11, 12, 13]
    units, blocks = tier.store([21], [(7,)])  # the oldest entry, the deepest, goes
    assert (units, blocks) == ([7], [0])
    assert tier.match([11, 12, 13]) == [11, 12] and 21 in tier
    assert tier.store([22], [(8, 9, 10, 11)]) == ([], [])  # larger than the whole tier
    assert tier.free_blocks == 0


def test_an_entry_held_but_dropped_to_make_room_for_the_ones_before_it_is_stored_again():
    tier = HostTier(3)
    tier.store([1], [(1,)])
    tier.store([2, 3], [(2,), (3,)])  # full; entry 1 is the oldest
    assert tier.store([5, 1], [(5,), (1,)]) == ([5, 1], [0, 1])  # 5 takes 1's block, 1 takes 2's
    assert 3 in tier and 5 in tier and 1 in tier and 2 not in tier


def test_pinned_entries_come_back_as_the_newest_root_last():
    tier = HostTier(4)
    tier.store([3, 2, 1], [(3,), (2,), (1,)])  # host blocks 0, 1, 2
    spans = tier.pin([1, 2])
    assert tier.store([9, 8, 7], [(9,), (8,), (7,)]) == ([8, 7], [0, 3])  # 2 blocks unpinned
    tier.unpin([1, 2], spans)
    tier.store([6, 5, 4], [(6,), (5,), (4,)])  # drops 8, 7, then 2 before its parent 1
    assert tier.match([1, 2]) == [1] and 8 not in tier and 7 not in tier


@pytest.mark.parametrize("name, params, slots, error", [
    ("static", {}, 64, ParamError),
    ("paged", {"enable_prefix_cache": False}, 64, ValueError),
    ("paged", {"block_size": 16}, 8, ValueError),
    ("paged", {}, -16, ValueError),
])
def test_a_tier_that_cannot_be_built_is_an_error(name, params, slots, error):
    with pytest.raises(error, match="host"):
        make_allocator(name, 64, host_cache_slots=slots, **params)


def conserved(alloc) -> bool:
    u = alloc.usage()
    return u.backed == u.live + u.stale + u.reserved + u.internal + u.cached + u.free


@pytest.mark.parametrize("name, params", [
    ("paged", {"block_size": 16}),
    ("segmented", {"segment_tokens": 32}),
    ("hybrid", {"block_size": 8, "segment_tokens": 32}),
])
def test_entries_a_slide_lets_go_reach_the_host_when_evicted_and_come_back(name, params):
    """A slide puts the window's passed prompt entries in the LRU (the chain's first ones, while
    the sequence still holds the later ones); evicted, they go to the host like any entry. A
    prompt of that family then finds its first entries on the host only (the device's later
    entry waits behind the missing root), gets them back, and the chain is whole on the
    device again."""
    alloc = make_allocator(name, 96, host_cache_slots=128, **params)
    unit = alloc.block_size
    allocate(alloc, 0, prompt(1, 4))
    alloc.extend(0, 16)
    first = tuple(alloc.layout(0).block_table)
    alloc.slide(0, 52)  # entries 0-2 leave the window whole; 4 tokens of entry 3 are stale
    u = alloc.usage()
    assert (u.cached, u.stale) == (48, 4) and conserved(alloc)
    assert alloc.take_host_copies() == []

    allocate(alloc, 1, prompt(2, 4))  # 16 slots free: the slid entries are evicted
    (offload,) = alloc.take_host_copies()
    assert offload.to_host and sorted(offload.units) == sorted(first[: 48 // unit])
    where = dict(zip(offload.units, offload.host_blocks))
    assert conserved(alloc)
    alloc.free(1)
    assert alloc.cached_prefix_tokens(prompt(1, 4), CHUNK) == 48

    assert allocate(alloc, 2, prompt(1, 4)) == 48
    copies = alloc.take_host_copies()
    assert [c.to_host for c in copies] == [True, False]  # prompt 2 leaves, prompt 1 comes back
    assert copies[1].units == tuple(alloc.layout(2).block_table[: 48 // unit])
    assert copies[1].host_blocks == tuple(where[u] for u in first[: 48 // unit])
    assert conserved(alloc)
    alloc.free(2)
    assert alloc.cached_prefix_tokens(prompt(1, 4), CHUNK) == 64  # entry 3: still seq 0's
    assert allocate(alloc, 3, prompt(1, 4)) == 64
    assert alloc.take_host_copies() == [] and conserved(alloc)
