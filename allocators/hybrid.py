"""Hybrid allocation: paged blocks inside segments that are added on demand and released.

Blocks, ref counts, copy-on-write forks and the per-block prefix cache work exactly as in paged;
only the backing differs: memory is backed a segment of segment_tokens slots at a time, when no
live segment has a free block, and a segment is given back once it holds no allocated or cached
block. A segment holds segment_tokens // block_size whole blocks.
"""
from __future__ import annotations

from allocators.block_pool import BlockPoolAllocator, check_unit_tokens
from allocators.segment_pool import SegmentPool


class HybridAllocator(BlockPoolAllocator):
    """Blocks of block_size tokens in on-demand segments, with the paged prefix cache."""

    def __init__(
        self,
        budget_slots: int,
        *,
        block_size: int = 16,
        segment_tokens: int = 65536,
        enable_prefix_cache: bool = True,
    ) -> None:
        check_unit_tokens("block_size", block_size)
        if segment_tokens < block_size:
            raise ValueError(f"segment_tokens {segment_tokens} < block_size {block_size}")
        pool = SegmentPool(
            max(0, budget_slots) // block_size, segment_tokens // block_size, preallocated=False
        )
        super().__init__(budget_slots, block_size, pool, enable_prefix_cache=enable_prefix_cache)
