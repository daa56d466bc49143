"""Paged allocation (vLLM's PagedAttention): fixed-size blocks from one preallocated pool.

The whole budget, rounded down to whole blocks, is backed from the start as one segment. Blocks
come from the free pool lowest id first; full blocks of hashed prompt chunks stay in a
hash-chained prefix cache (one key per block) after their sequences finish, until evicted least
recently used first; forks share every block and copy a partly written last block on write.
"""
from __future__ import annotations

from allocators.block_pool import BlockPoolAllocator
from allocators.segment_pool import SegmentPool
from allocators.spec import AllocatorSpec
from allocators.unit_params import (
    PREFIX_CACHE_PARAM, check_unit_tokens, unit_capacity, unit_param,
)

DEFAULT_BLOCK_SIZE = 16  # vLLM's


class PagedAllocator(BlockPoolAllocator):
    """Blocks of block_size tokens in one preallocated pool, with a per-block prefix cache."""

    def __init__(
        self, budget_slots: int, *, block_size: int = DEFAULT_BLOCK_SIZE,
        enable_prefix_cache: bool = True, host_cache_slots: int = 0,
    ) -> None:
        check_unit_tokens("block_size", block_size)
        num_blocks = max(0, budget_slots) // block_size
        pool = SegmentPool(num_blocks, max(1, num_blocks), preallocated=True)
        super().__init__(budget_slots, block_size, pool, enable_prefix_cache=enable_prefix_cache,
                         host_cache_slots=host_cache_slots)


SPEC = AllocatorSpec(
    name="paged",
    cls=PagedAllocator,
    params=(
        unit_param("block_size", DEFAULT_BLOCK_SIZE, "tokens per block", "bs"),
        PREFIX_CACHE_PARAM,
    ),
    grain="block_size",
    needs_contiguity=False,
    host_tier=True,
    capacity_formula=unit_capacity("block_size"),
)
