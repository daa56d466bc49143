"""Hybrid allocation: paged blocks inside segments that are added on demand and released.

Blocks, ref counts, copy-on-write forks and the per-block prefix cache work exactly as in paged;
only the backing differs: memory is backed a segment of segment_tokens slots at a time, when no
live segment has a free block, and a segment is given back once it holds no allocated or cached
block. A segment holds segment_tokens // block_size whole blocks.
"""
from __future__ import annotations

from allocators.block_pool import BlockPoolAllocator
from allocators.segment_pool import SegmentPool
from allocators.spec import AllocatorSpec
from allocators.unit_params import (
    DEFAULT_SEGMENT_TOKENS, PREFIX_CACHE_PARAM, check_unit_tokens, segment_param, unit_capacity,
    unit_param,
)

DEFAULT_BLOCK_SIZE = 16  # as paged, so the two differ only in backing


class HybridAllocator(BlockPoolAllocator):
    """Blocks of block_size tokens in on-demand segments, with the paged prefix cache."""

    def __init__(
        self,
        budget_slots: int,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        segment_tokens: int = DEFAULT_SEGMENT_TOKENS,
        enable_prefix_cache: bool = True,
        host_cache_slots: int = 0,
    ) -> None:
        check_unit_tokens("block_size", block_size)
        if segment_tokens < block_size:
            raise ValueError(f"segment_tokens {segment_tokens} < block_size {block_size}")
        pool = SegmentPool(
            max(0, budget_slots) // block_size, segment_tokens // block_size, preallocated=False
        )
        super().__init__(budget_slots, block_size, pool, enable_prefix_cache=enable_prefix_cache,
                         host_cache_slots=host_cache_slots)


SPEC = AllocatorSpec(
    name="hybrid",
    cls=HybridAllocator,
    params=(
        unit_param("block_size", DEFAULT_BLOCK_SIZE, "tokens per block", "bs"),
        segment_param("block_size"),
        PREFIX_CACHE_PARAM,
    ),
    grain="block_size",
    needs_contiguity=False,
    host_tier=True,
    capacity_formula=unit_capacity("block_size"),
    cost_hint=1.2,
)
