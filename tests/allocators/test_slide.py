"""slide: what each allocator lets go when a sliding attention window moves past tokens."""
from __future__ import annotations

import pytest

from allocators import make_allocator
from allocators.base import NO_BLOCK

BLOCK_POOLS = [
    pytest.param("paged", {"block_size": 16}, id="paged"),
    pytest.param("segmented", {"page_size": 16, "segment_tokens": 64}, id="segmented"),
    pytest.param("hybrid", {"block_size": 16, "segment_tokens": 64}, id="hybrid"),
]


def conserved(alloc) -> bool:
    u = alloc.usage()
    return u.backed == u.live + u.stale + u.reserved + u.internal + u.cached + u.free


@pytest.mark.parametrize("name, params", BLOCK_POOLS)
def test_whole_units_before_the_window_go_and_the_rest_is_stale(name, params):
    alloc = make_allocator(name, 256, **params)
    alloc.allocate(0, 40)
    free_before = alloc.usage().free + alloc.usage().budget - alloc.usage().backed
    alloc.slide(0, 20)  # block 0 (tokens 0-15) goes; tokens 16-19 stay in block 1, stale
    assert alloc.layout(0).block_table[0] == NO_BLOCK
    u = alloc.usage()
    assert (u.live, u.logical, u.stale) == (20, 20, 4)
    assert u.free + u.budget - u.backed == free_before + 16
    assert conserved(alloc)
    alloc.slide(0, 40)  # every written token has passed: blocks 0 and 1 gone, 8 stale
    u = alloc.usage()
    assert tuple(alloc.layout(0).block_table[:2]) == (NO_BLOCK, NO_BLOCK)
    assert (u.live, u.logical, u.stale) == (0, 0, 8)
    alloc.extend(0, 10)  # the window's tokens are written on as ever
    assert (alloc.usage().live, alloc.length(0)) == (10, 50)
    alloc.free(0)
    u = alloc.usage()
    assert (u.live, u.logical, u.stale, u.reserved, u.internal) == (0, 0, 0, 0, 0)
    assert conserved(alloc)


@pytest.mark.parametrize("name, params", BLOCK_POOLS)
def test_a_shared_unit_is_stale_only_for_what_every_holder_passed(name, params):
    alloc = make_allocator(name, 256, **params)
    alloc.allocate(0, 40)
    alloc.fork(0, 1)
    alloc.slide(0, 20)  # the child still reads block 0 and tokens 16-19
    u = alloc.usage()
    assert (u.live, u.stale, u.logical) == (40, 0, 60)
    alloc.slide(1, 25)  # block 0 goes; block 1: the parent passed 4 tokens, the child 9
    u = alloc.usage()
    assert (u.live, u.stale, u.logical) == (20, 4, 35)
    alloc.free(0)  # now the child alone holds block 1
    u = alloc.usage()
    assert (u.live, u.stale) == (15, 9)
    assert conserved(alloc)


def test_a_prefix_hit_reads_released_prompt_blocks_from_the_cache():
    """A registered block a slide lets go waits in the cache with that prefix's KV: a later
    request with the same prompt hits it, and reads the stale tokens of a held one again."""
    alloc = make_allocator("paged", 256, block_size=16)
    hashes = (5, 6, 7)
    alloc.allocate(0, 48, prefix_hashes=hashes, chunk_tokens=16)
    alloc.slide(0, 20)
    u = alloc.usage()
    assert (u.cached, u.stale, u.live) == (16, 4, 28)
    assert alloc.allocate(1, 48, prefix_hashes=hashes, chunk_tokens=16) == 48
    u = alloc.usage()
    assert (u.cached, u.stale, u.live) == (0, 0, 48)
    assert tuple(alloc.layout(1).block_table[1:]) == tuple(alloc.layout(0).block_table[1:])


def test_an_evicted_first_block_ends_the_hits_of_its_chain():
    """A hit walks the chain from the first block: once a slide's released first block is
    evicted, the blocks after it serve no hit, though they stay cached until evicted."""
    alloc = make_allocator("paged", 64, block_size=16)  # 4 blocks
    hashes = (5, 6, 7)
    alloc.allocate(0, 48, prefix_hashes=hashes, chunk_tokens=16)
    alloc.slide(0, 16)  # block 0 to the cache
    alloc.allocate(1, 16)  # the last free block
    alloc.extend(1, 16)  # evicts block 0
    alloc.free(0)
    assert alloc.usage().cached == 32
    assert alloc.cached_prefix_tokens(hashes, 16) == 0


def test_segmented_lets_a_prompt_chunk_go_only_whole():
    """Its prefix entries are chunks of pages with one reference count: a chunk of the prompt
    goes once the window has passed all of it; generated tokens go page by page."""
    alloc = make_allocator("segmented", 256, page_size=1, segment_tokens=64)
    alloc.allocate(0, 32, prefix_hashes=(1, 2), chunk_tokens=16)
    alloc.extend(0, 8)
    alloc.slide(0, 12)  # inside the first chunk: nothing goes
    assert NO_BLOCK not in alloc.layout(0).block_table
    assert alloc.usage().stale == 12
    alloc.slide(0, 20)  # the first chunk goes whole; 4 pages of the second stay, stale
    assert tuple(alloc.layout(0).block_table[:16]) == (NO_BLOCK,) * 16
    assert alloc.usage().stale == 4 and alloc.usage().cached == 16
    alloc.slide(0, 36)  # past the prompt: generated pages go one by one
    table = tuple(alloc.layout(0).block_table)
    assert table[:36] == (NO_BLOCK,) * 36 and NO_BLOCK not in table[36:]
    assert alloc.usage().stale == 0 and conserved(alloc)


def test_static_keeps_its_reservation_and_counts_the_passed_tokens_stale():
    alloc = make_allocator("static", 256, max_model_len=64, align_tokens=16)
    alloc.allocate(0, 40, final_tokens=50)
    table = tuple(alloc.layout(0).block_table)
    alloc.slide(0, 30)
    u = alloc.usage()
    assert tuple(alloc.layout(0).block_table) == table
    assert (u.live, u.logical, u.stale, u.reserved, u.internal) == (10, 10, 30, 10, 14)
    assert conserved(alloc)
    alloc.fork(0, 1)  # the copy starts at the block the window starts in
    assert [c.src for c in alloc.take_block_copies()] == [table[1], table[2]]
    assert alloc.usage().stale == 60


@pytest.mark.parametrize("name, params", [
    *BLOCK_POOLS, pytest.param("static", {"align_tokens": 16}, id="static")])
def test_windows_move_forward_within_the_sequence_only(name, params):
    alloc = make_allocator(name, 256, **params)
    alloc.allocate(0, 30)
    alloc.slide(0, 20)
    before = alloc.usage(), alloc.layout(0)
    for bad in (10, 31):
        with pytest.raises(ValueError, match="window cannot move"):
            alloc.slide(0, bad)
    with pytest.raises(ValueError, match="window starts at 20"):
        alloc.truncate(0, 19)
    assert (alloc.usage(), alloc.layout(0)) == before
    alloc.truncate(0, 20)  # the window's first token is kept
    assert alloc.length(0) == 20
