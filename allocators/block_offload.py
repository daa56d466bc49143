"""The host tier of the block-pool allocators' prefix cache, as a mixin.

Entries the device prefix cache evicts move to a HostTier (host_tier.py) when the allocator has
one; a prefix hit that walks past the device's entries into the host's brings them back into the
fresh units of the new sequence. Both copies are reported as HostCopy, each placed among the
block copies by copies_before, so that an executor reads an evicted unit before any copy or
restore decided after it writes there.
"""
from __future__ import annotations

from itertools import chain

from allocators.base import HostCopy
from allocators.host_tier import HostTier


class Offload:
    """BlockPoolAllocator's host tier (a mixin: it works on the allocator's copies lists)."""

    @property
    def host_tier_blocks(self) -> int:
        return self._host.num_blocks if self._host is not None else 0

    def take_host_copies(self) -> list[HostCopy]:
        copies, self._host_copies = self._host_copies, []
        return copies

    @staticmethod
    def _host_tier(slots: int, unit_tokens: int, enable_prefix_cache: bool) -> HostTier | None:
        """The host tier of host_cache_slots slots (whole units); None for 0."""
        if slots < 0:
            raise ValueError(f"host_cache_slots must be >= 0, got {slots}")
        if not slots:
            return None
        if not enable_prefix_cache:
            raise ValueError("a host tier keeps evicted prefix-cache entries: it needs "
                             "enable_prefix_cache")
        if slots < unit_tokens:
            raise ValueError(f"host_cache_slots {slots} hold no whole unit of {unit_tokens} "
                             "slots")
        return HostTier(slots // unit_tokens)

    def _offload(self, keys: list[int], spans: list[tuple[int, ...]]) -> None:
        """Entries evicted from the device go to the host tier: their units are copied out
        before anything decided after this reuses them."""
        units, blocks = self._host.store(keys, spans)
        if units:
            self._host_copies.append(
                HostCopy(True, tuple(units), tuple(blocks), len(self._block_copies)))

    def _bring_back(self, units: list[int], keys: list[int], spans: list[tuple[int, ...]]) -> None:
        """Copy pinned host-tier entries into a new sequence's first fresh units (after the
        evictions that made room for them, whose host copies are read first); they stay on
        the host too."""
        blocks = tuple(chain.from_iterable(spans))
        self._host_copies.append(
            HostCopy(False, tuple(units[: len(blocks)]), blocks, len(self._block_copies)))
        self._host.unpin(keys, spans)
