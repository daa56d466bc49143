"""KV-cache allocators: static, paged, segmented and hybrid, behind one contract (base.py)."""
from __future__ import annotations

from allocators.base import Allocator, OutOfKVMemory, SeqLayout, Usage

ALLOCATORS = ("static", "paged", "segmented", "hybrid")


def make_allocator(name: str, budget_slots: int, **params) -> Allocator:
    """Build an allocator by name with its own parameters (block_size, segment_tokens, ...)."""
    if name == "static":
        from allocators.static import StaticAllocator as cls
    elif name == "paged":
        from allocators.paged import PagedAllocator as cls
    elif name == "segmented":
        from allocators.segmented import SegmentedAllocator as cls
    elif name == "hybrid":
        from allocators.hybrid import HybridAllocator as cls
    else:
        raise ValueError(f"unknown allocator {name!r}; choose one of {', '.join(ALLOCATORS)}")
    return cls(budget_slots, **params)


__all__ = ["ALLOCATORS", "Allocator", "OutOfKVMemory", "SeqLayout", "Usage", "make_allocator"]
