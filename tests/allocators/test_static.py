"""StaticAllocator: contiguous reservations, fit policies, fragmentation and accounting."""
from __future__ import annotations

import pytest

from allocators import OutOfKVMemory, make_allocator
from allocators.static import StaticAllocator


def conserved(alloc: StaticAllocator) -> bool:
    u = alloc.usage()
    return u.backed == u.live + u.reserved + u.internal + u.cached + u.free


def holes_big_then_exact(fit: str) -> StaticAllocator:
    """Arena of 10 blocks with a 3-block hole at block 0 and a 2-block hole at block 4."""
    alloc = StaticAllocator(160, fit=fit, align_tokens=16)
    for seq_id, tokens in enumerate((48, 16, 32, 16, 48)):  # blocks 0-2, 3, 4-5, 6, 7-9
        alloc.allocate(seq_id, tokens)
    alloc.free(0)
    alloc.free(2)
    return alloc


def test_first_fit_takes_the_lowest_hole_that_fits():
    alloc = holes_big_then_exact("first")
    alloc.allocate(10, 32)
    assert tuple(alloc.layout(10).block_table) == (0, 1)


def test_best_fit_takes_the_tightest_hole():
    alloc = holes_big_then_exact("best")
    alloc.allocate(10, 32)
    assert tuple(alloc.layout(10).block_table) == (4, 5)


def test_interleaved_frees_fragment_the_arena():
    alloc = StaticAllocator(256, align_tokens=16)  # 16 blocks
    for seq_id in range(8):
        alloc.allocate(seq_id, 32)  # 2 blocks each
    for seq_id in range(0, 8, 2):
        alloc.free(seq_id)
    u = alloc.usage()
    assert (u.free, u.largest_free_run) == (128, 32)
    assert u.external_fragmentation == pytest.approx(0.75)
    assert alloc.can_allocate(32)
    assert not alloc.can_allocate(48)
    with pytest.raises(OutOfKVMemory):
        alloc.allocate(100, 48)


def test_freeing_merges_neighbours_back_into_one_range():
    alloc = StaticAllocator(256, align_tokens=16)
    for seq_id in range(8):
        alloc.allocate(seq_id, 32)
    for seq_id in (1, 3, 2, 0, 7, 5, 6, 4):
        alloc.free(seq_id)
    u = alloc.usage()
    assert u.free == u.largest_free_run == u.backed == 256
    assert u.external_fragmentation == 0.0
    alloc.allocate(0, 256)
    assert tuple(alloc.layout(0).block_table) == tuple(range(16))


def test_exhaustion_is_atomic():
    alloc = StaticAllocator(128, align_tokens=16)
    alloc.allocate(0, 10, final_tokens=64)
    alloc.allocate(1, 10, final_tokens=40)
    before = (alloc.usage(), alloc.layout(0), alloc.layout(1), alloc.length(0))
    with pytest.raises(OutOfKVMemory):
        alloc.allocate(2, 20, final_tokens=32)
    with pytest.raises(OutOfKVMemory):
        alloc.extend(0, 55)  # 10 + 55 > 64 reserved
    with pytest.raises(OutOfKVMemory):
        alloc.fork(0, 3)
    assert (alloc.usage(), alloc.layout(0), alloc.layout(1), alloc.length(0)) == before
    with pytest.raises(ValueError):
        alloc.layout(2)
    alloc.extend(0, 54)  # exactly fills the reservation
    assert alloc.length(0) == 64


def test_reservations_are_aligned_and_slack_is_internal():
    alloc = StaticAllocator(1000, align_tokens=16)
    assert alloc.usage().backed == 992  # rounded down to whole blocks
    alloc.allocate(0, 10, final_tokens=33)  # 33 tokens -> 3 blocks = 48 slots
    layout = alloc.layout(0)
    assert (layout.block_size, layout.blocks_per_segment, tuple(layout.block_table)) == (16, 62, (0, 1, 2))
    u = alloc.usage()
    assert (u.live, u.logical, u.reserved, u.internal) == (10, 10, 23, 15)
    alloc.extend(0, 23)
    u = alloc.usage()
    assert (u.live, u.reserved, u.internal) == (33, 0, 15)
    alloc.allocate(1, 5)  # no final length known: the reservation is the prompt, aligned
    assert tuple(alloc.layout(1).block_table) == (3,)
    assert conserved(alloc)


def test_max_model_len_sets_every_reservation():
    alloc = StaticAllocator(512, max_model_len=100, align_tokens=16)  # 7 blocks each
    alloc.allocate(0, 10, final_tokens=20)
    assert len(alloc.layout(0).block_table) == 7
    u = alloc.usage()
    assert (u.reserved, u.internal) == (10, 112 - 20)
    assert not alloc.can_allocate(101)
    with pytest.raises(ValueError):
        alloc.allocate(1, 101)
    alloc.allocate(1, 20)
    alloc.allocate(2, 20)
    alloc.allocate(3, 20)
    assert not alloc.can_allocate(1)  # 4 * 7 = 28 of 32 blocks used


def test_fork_copies_into_its_own_reservation():
    alloc = StaticAllocator(256, align_tokens=16)
    alloc.allocate(0, 20, final_tokens=40)
    alloc.fork(0, 1)
    assert tuple(alloc.layout(1).block_table) == (3, 4, 5)
    assert alloc.length(1) == 20
    u = alloc.usage()
    assert (u.live, u.logical, u.reserved, u.internal) == (40, 40, 40, 16)
    alloc.extend(1, 20)
    assert alloc.length(0) == 20


def test_prefix_hashes_never_hit():
    alloc = StaticAllocator(256)
    assert alloc.allocate(0, 64, prefix_hashes=[1, 2], chunk_tokens=32) == 0
    assert alloc.allocate(1, 64, prefix_hashes=[1, 2], chunk_tokens=32) == 0
    assert alloc.usage().live == 128


def test_usage_conservation_through_a_mixed_run():
    alloc = StaticAllocator(1024, fit="best", align_tokens=8)
    for seq_id in range(12):
        alloc.allocate(seq_id, 3 + 7 * seq_id % 40, final_tokens=50 + seq_id)
        assert conserved(alloc)
    for seq_id in range(0, 12, 3):
        alloc.extend(seq_id, 4)
        alloc.free(seq_id + 1)
        assert conserved(alloc)
    for seq_id in (0, 2, 3, 5, 6, 8, 9, 11):
        alloc.free(seq_id)
        assert conserved(alloc)
    u = alloc.usage()
    assert (u.live, u.reserved, u.internal, u.free) == (0, 0, 0, 1024)


def test_misuse_raises_value_error():
    alloc = make_allocator("static", 256, align_tokens=16)
    alloc.allocate(0, 10)
    with pytest.raises(ValueError):
        alloc.allocate(0, 10)
    with pytest.raises(ValueError):
        alloc.allocate(1, 0)
    with pytest.raises(ValueError):
        alloc.allocate(1, 10, final_tokens=5)
    with pytest.raises(ValueError):
        alloc.extend(7)
    with pytest.raises(ValueError):
        alloc.fork(0, 0)
    with pytest.raises(ValueError):
        alloc.free(7)
    with pytest.raises(ValueError):
        StaticAllocator(256, fit="worst")


def test_an_arena_smaller_than_one_block_holds_nothing():
    alloc = StaticAllocator(10, align_tokens=16)
    assert alloc.segments() == ()
    assert alloc.usage().backed == 0
    assert not alloc.can_allocate(1)
    with pytest.raises(OutOfKVMemory):
        alloc.allocate(0, 1)
