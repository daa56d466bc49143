"""The prefix cache: chained keys to the units holding that prefix, and an LRU of evictable ones.

An entry maps a chained key (allocators.prefix.block_keys) to the units that hold the KV of its
span: one block for paged and hybrid, a node of several pages for segmented. Since a key chains
every key before it, the keys form a prefix tree: an entry's parent is the entry of the previous
key. Entries with no running reference wait in an LRU, oldest first.

Why plain LRU order is also leaves-first order: a sequence holds an entry only together with all
its ancestors (a hit walks from the root; a sequence registers entry j only if it holds entry
j - 1), and a sequence releases its entries deepest first. So an entry enters the LRU no earlier
than each of its descendants and leaves it together with them, and the oldest entry is always a
leaf; evicting it never orphans a cached descendant.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Sequence


class PrefixCache:
    """Registered entries, the unit -> key index, and the LRU of unreferenced entries."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[int, ...]] = {}
        self._key_of: dict[int, int] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()
        self.cached_units = 0  # units of the entries in the LRU

    def __contains__(self, key: int) -> bool:
        return key in self._entries

    def match(self, keys: Sequence[int], limit: int) -> list[int]:
        """The leading keys (at most limit) that have an entry: the cached prefix."""
        hits = []
        for key in keys[:limit]:
            if key not in self._entries:
                break
            hits.append(key)
        return hits

    def leading(self, keys: Iterable[int]) -> int:
        """How many leading keys have an entry (keys may be a lazy iterator: it stops at the
        first miss, so that asking about a long uncached prompt costs one key)."""
        count = 0
        for key in keys:
            if key not in self._entries:
                break
            count += 1
        return count

    def key_of(self, unit: int) -> int | None:
        """The key of the entry holding unit, if it is registered."""
        return self._key_of.get(unit)

    def units(self, key: int) -> tuple[int, ...]:
        return self._entries[key]

    def unreferenced_units(self, keys: Sequence[int]) -> int:
        """Units of these entries now waiting in the LRU (a hit takes them out of it)."""
        return sum(len(self._entries[key]) for key in keys if key in self._lru)

    def register(self, key: int, units: Sequence[int]) -> None:
        """Add an entry for units that a running sequence holds (so it is not in the LRU)."""
        self._entries[key] = tuple(units)
        self._key_of.update(dict.fromkeys(units, key))

    def forget(self, key: int) -> None:
        """Drop a held entry: its holder is about to rewrite part of it. Cached entries below it
        can no longer be reached by a match and wait in the LRU until evicted."""
        for unit in self._entries.pop(key):
            del self._key_of[unit]

    def acquire(self, key: int) -> bool:
        """A sequence takes a reference; return whether the entry was unreferenced before."""
        if key not in self._lru:
            return False
        del self._lru[key]
        self.cached_units -= len(self._entries[key])
        return True

    def release(self, key: int) -> None:
        """The entry's last reference is gone: it becomes the newest evictable entry."""
        self._lru[key] = None
        self.cached_units += len(self._entries[key])

    def release_units(self, units: list[int]) -> list[int]:
        """Take units that just lost their last running reference, deepest first. An entry
        becomes evictable (release) when its first unit, the last of its units to go, comes by;
        return the units outside the cache, which are free now."""
        key_of, entries = self._key_of, self._entries
        if key_of.keys().isdisjoint(units):
            return units
        outside = []
        index = 0
        while index < len(units):
            unit = units[index]
            key = key_of.get(unit)
            if key is None:
                outside.append(unit)
                index += 1
                continue
            span = entries[key]
            stop = index + len(span)
            # A sequence holds an entry's units in order and lets them go together, so they
            # come here as one reversed run: the entry is released once for all of them.
            if tuple(reversed(units[index:stop])) == span:
                self.release(key)
                index = stop
            else:
                if span[0] == unit:
                    self.release(key)
                index += 1
        return outside

    def evict_oldest(self) -> tuple[int, ...]:
        """Drop the least recently used unreferenced entry; return its units (now free)."""
        key, _ = self._lru.popitem(last=False)
        units = self._entries.pop(key)
        for unit in units:
            del self._key_of[unit]
        self.cached_units -= len(units)
        return units
