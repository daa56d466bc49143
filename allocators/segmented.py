"""Segmented allocation (SGLang-style): token slots in segments added on demand, a prefix tree.

KV lives in pages of page_size slots (one token by default) inside segments of segment_tokens
slots, added when no live segment has a free page (lowest free segment id first) and released
once they hold no allocated or cached page. Page ids are global (segment * pages per segment +
offset), so a sequence's slot ids stay valid when segments come and go around it.

Prefix sharing is a prefix (radix) tree whose edges are chunks of the prompt: one node per
chunk_tokens tokens (rounded down to whole pages), keyed by the chained chunk hashes. That is the
finest grain the trace's hashes carry, and it keeps the tree and the hashing per request at one
node per chunk rather than one per token. Unreferenced nodes are evicted least recently used
first, which is leaves first (see prefix_cache).
"""
from __future__ import annotations

from allocators.block_pool import BlockPoolAllocator
from allocators.segment_pool import SegmentPool
from allocators.spec import AllocatorSpec
from allocators.unit_params import (
    DEFAULT_SEGMENT_TOKENS, PREFIX_CACHE_PARAM, check_unit_tokens, segment_param, unit_capacity,
    unit_param,
)

DEFAULT_PAGE_SIZE = 1  # token-grained, as SGLang


class SegmentedAllocator(BlockPoolAllocator):
    """Pages of page_size slots in on-demand segments, with a chunk-grained prefix tree."""

    def __init__(
        self,
        budget_slots: int,
        *,
        segment_tokens: int = DEFAULT_SEGMENT_TOKENS,
        page_size: int = DEFAULT_PAGE_SIZE,
        enable_prefix_cache: bool = True,
        host_cache_slots: int = 0,
    ) -> None:
        check_unit_tokens("page_size", page_size)
        if segment_tokens < page_size:
            raise ValueError(f"segment_tokens {segment_tokens} < page_size {page_size}")
        pool = SegmentPool(
            max(0, budget_slots) // page_size, segment_tokens // page_size, preallocated=False
        )
        super().__init__(budget_slots, page_size, pool, enable_prefix_cache=enable_prefix_cache,
                         host_cache_slots=host_cache_slots)

    def _entry_units(self, chunk_tokens: int) -> int:
        return max(1, chunk_tokens // self._unit)


SPEC = AllocatorSpec(
    name="segmented",
    cls=SegmentedAllocator,
    params=(
        segment_param("page_size"),
        unit_param("page_size", DEFAULT_PAGE_SIZE, "tokens per page", "page"),
        PREFIX_CACHE_PARAM,
    ),
    grain="page_size",
    needs_contiguity=False,
    host_tier=True,
    capacity_formula=unit_capacity("page_size"),
    cost_hint=5.0,
)
