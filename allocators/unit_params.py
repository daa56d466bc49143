"""The parameters and capacity formula that the specs of the unit allocators (paged, segmented,
hybrid: those built on allocators.block_pool) share."""
from __future__ import annotations

from allocators.spec import Capacity, CapacityFormula, Param

MAX_UNIT_TOKENS = 256  # the largest block the paged decode kernel supports
DEFAULT_SEGMENT_TOKENS = 65536


def check_unit_tokens(name: str, value: int) -> None:
    if not 1 <= value <= MAX_UNIT_TOKENS:
        raise ValueError(f"{name} must be in 1..{MAX_UNIT_TOKENS}, got {value}")


def unit_param(name: str, default: int, help: str, label: str) -> Param:
    """The unit (block or page) parameter, bounded by what the decode kernel supports."""
    return Param(name, int, default, help, min=1, max=MAX_UNIT_TOKENS, label=label)


def segment_param(unit: str) -> Param:
    """The segment size of on-demand backing; a segment holds at least one unit."""
    return Param("segment_tokens", int, DEFAULT_SEGMENT_TOKENS, "slots backed (and released) "
                 "at a time", min=unit, label="seg")


PREFIX_CACHE_PARAM = Param("enable_prefix_cache", bool, True, "keep hashed prompt units for "
                           "reuse", label="cache")


def unit_capacity(unit: str) -> CapacityFormula:
    """The capacity of an allocator whose sequences hold whole units of params[unit] slots and
    whose units may come from anywhere in the budget (no contiguity)."""
    def capacity(budget_slots: int, context: int, params) -> Capacity:
        unit_tokens = params[unit]
        per_seq = -(-context // unit_tokens) * unit_tokens
        units = budget_slots // unit_tokens
        return Capacity(per_seq, units // (per_seq // unit_tokens), units * unit_tokens)
    return capacity
