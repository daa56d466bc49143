"""The KV pool follows the allocator's segments and stores K/V at its global slot ids."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from allocators import make_allocator  # noqa: E402
from harness.engine.executor import KVGeometry  # noqa: E402
from harness.gpu.kv_pool import KVPool, SegmentMismatch  # noqa: E402

LAYERS, HEADS, DIM = 2, 2, 8


def make_pool(allocator):
    geometry = KVGeometry(allocator.block_size, allocator.blocks_per_segment,
                          allocator.usage().budget)
    return KVPool(geometry, num_layers=LAYERS, num_kv_heads=HEADS, head_dim=DIM,
                  dtype=torch.float32, device="cpu")


def follow(pool, allocator) -> bool:
    """What a batch tells the pool: the segments added and released since it last looked."""
    now, before = set(allocator.segments()), set(pool.live_segments())
    return pool.sync(sorted(now - before), sorted(before - now))


def segment_bytes(blocks_per_segment, block_size):
    return LAYERS * 2 * blocks_per_segment * block_size * HEADS * DIM * 4


def test_pool_allocates_and_frees_segments_with_the_allocator():
    alloc = make_allocator("hybrid", 256, block_size=4, segment_tokens=32)
    pool = make_pool(alloc)
    assert pool.allocated_bytes == 0
    for sid in range(5):
        alloc.allocate(sid, 30)
    bps = alloc.blocks_per_segment
    assert bps == alloc.layout(0).blocks_per_segment
    assert follow(pool, alloc)
    assert sorted(pool._tensors) == list(alloc.segments())
    assert pool.allocated_bytes == len(alloc.segments()) * segment_bytes(bps, 4)
    for sid in range(4):
        alloc.free(sid)
    assert follow(pool, alloc)
    assert sorted(pool._tensors) == list(alloc.segments())
    assert pool.allocated_bytes == len(alloc.segments()) * segment_bytes(bps, 4)
    assert not follow(pool, alloc)


def test_preallocating_allocators_hold_one_segment_from_the_first_sync():
    for name in ("static", "paged"):
        alloc = make_allocator(name, 128)
        pool = make_pool(alloc)
        alloc.allocate(0, 10, final_tokens=20)
        follow(pool, alloc)
        assert pool.allocated_bytes == segment_bytes(pool.blocks_per_segment, pool.block_size)
        assert pool.blocks_per_segment * pool.block_size >= 128 - pool.block_size


def test_write_then_gather_round_trips_across_segments():
    alloc = make_allocator("segmented", 64, segment_tokens=16)
    pool = make_pool(alloc)
    for sid in range(3):
        alloc.allocate(sid, 14)
    follow(pool, alloc)
    slots = np.concatenate([np.asarray(alloc.layout(s).slot_mapping(0, 14)) for s in range(3)])
    assert len(np.unique(slots // 16)) >= 2  # the slots span several segments
    where = pool.index(slots)
    k = torch.randn(len(slots), HEADS, DIM)
    v = torch.randn(len(slots), HEADS, DIM)
    pool.write(1, k, v, where)
    k_back, v_back = pool.gather(1, where)
    assert torch.equal(k_back, k) and torch.equal(v_back, v)
    every_layer = pool.read_slots(where)
    assert torch.equal(every_layer[1, 0], k) and torch.equal(every_layer[1, 1], v)
    other = pool.index(slots[::-1].copy())
    pool.write_slots(other, every_layer)
    assert torch.equal(pool.gather(1, other)[0], k)


def test_slot_copies_within_one_segment_round_trip_every_layer():
    alloc = make_allocator("paged", 128, block_size=16)
    pool = make_pool(alloc)
    alloc.allocate(0, 40)
    follow(pool, alloc)
    slots = np.asarray(alloc.layout(0).slot_mapping(0, 40))
    where = pool.index(slots)
    assert len(where.parts) == 1
    for layer in range(LAYERS):
        pool.write(layer, torch.randn(len(slots), HEADS, DIM), torch.randn(len(slots), HEADS, DIM),
                   where)
    every_layer = pool.read_slots(where)
    assert every_layer.shape == (LAYERS, 2, len(slots), HEADS, DIM)
    for layer in range(LAYERS):
        assert all(torch.equal(every_layer[layer, i], part)
                   for i, part in enumerate(pool.gather(layer, where)))
    other = pool.index(slots[::-1].copy())
    pool.write_slots(other, every_layer)
    assert torch.equal(pool.read_slots(other), every_layer)


def test_slots_in_a_segment_with_no_tensor_are_refused():
    alloc = make_allocator("hybrid", 128, block_size=4, segment_tokens=32)
    pool = make_pool(alloc)
    alloc.allocate(0, 8)
    follow(pool, alloc)
    with pytest.raises(SegmentMismatch):
        pool.index(np.array([100]))
