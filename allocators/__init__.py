"""KV-cache allocators: static, paged, segmented and hybrid, behind one contract (base.py)."""
from __future__ import annotations

from allocators.base import Allocator, BlockCopy, OutOfKVMemory, SeqLayout, Usage

ALLOCATORS = ("static", "paged", "segmented", "hybrid")


def allocator_class(name: str) -> type[Allocator]:
    """The allocator class of a name (its constructor's keywords are its parameters)."""
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
    return cls


def make_allocator(name: str, budget_slots: int, **params) -> Allocator:
    """Build an allocator by name with its own parameters (block_size, segment_tokens, ...)."""
    return allocator_class(name)(budget_slots, **params)


__all__ = [
    "ALLOCATORS", "Allocator", "BlockCopy", "OutOfKVMemory", "SeqLayout", "Usage", "allocator_class",
    "make_allocator",
]
