"""KV-cache allocators: static, paged, segmented and hybrid, behind one contract (base.py), each
describing itself in a spec (spec.py) that SPECS collects by name."""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from allocators import hybrid, paged, segmented, static
from allocators.base import Allocator, BlockCopy, HostCopy, OutOfKVMemory, SeqLayout, Usage
from allocators.spec import AllocatorSpec, Capacity, Param, ParamError

# In the order every listing and report section shows them: the baseline first.
SPECS: Mapping[str, AllocatorSpec] = MappingProxyType(
    {spec.name: spec for spec in (static.SPEC, paged.SPEC, segmented.SPEC, hybrid.SPEC)}
)

DEFAULT_ALLOCATOR = "paged"  # what a config that names none runs: vLLM's policy


def spec_of(name: str) -> AllocatorSpec:
    """The spec of an allocator name; ParamError naming the known ones otherwise."""
    try:
        return SPECS[name]
    except KeyError:
        raise ParamError(f"unknown allocator {name!r}; allocators: {', '.join(SPECS)}") from None


def make_allocator(name: str, budget_slots: int, *, host_cache_slots: int = 0,
                   **params) -> Allocator:
    """Build an allocator by name with its own parameters, validated by its spec, and a host
    tier of host_cache_slots slots for its prefix cache (0: none)."""
    return spec_of(name).build(budget_slots, params, host_cache_slots=host_cache_slots)


__all__ = [
    "DEFAULT_ALLOCATOR", "SPECS", "Allocator", "AllocatorSpec", "BlockCopy", "Capacity",
    "HostCopy", "OutOfKVMemory", "Param", "ParamError", "SeqLayout", "Usage", "make_allocator",
    "spec_of",
]
