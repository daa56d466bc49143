"""The prefix cache: chained keys to the units holding that prefix, and an LRU of evictable ones.

An entry maps a chained key (allocators.prefix.block_keys) to the units that hold the KV of its
span: one block for paged and hybrid, a node of several pages for segmented. Since a key chains
every key before it, the keys form a prefix tree: an entry's parent is the entry of the previous
key. Entries with no running reference wait in an LRU, oldest first.

Why plain LRU order is also leaves-first order: a sequence holds an entry only together with all
its ancestors (a hit walks from the root; a sequence registers entry j only if it holds entry
j - 1), and a sequence releases its entries deepest first. So an entry enters the LRU no earlier
than each of its descendants and leaves it together with them, and the oldest entry is always a
leaf; evicting it never orphans a cached descendant. A sliding window breaks this on purpose: a
slide lets a sequence's first entries go while it holds the later ones, so a root may be the
oldest entry. Evicting it leaves its cached descendants unreachable by a match (as forget does);
they wait in the LRU until evicted in turn, or until a sequence registers the missing entries
again and the chain serves hits once more.

A prompt has hundreds of entries, and each is registered, hit, released and evicted once per
request, so every operation takes a whole chain at once. While every entry has one unit (paged,
hybrid) a chain maps onto the dicts through map/zip/compress without a Python loop per entry;
entries of several units (segmented nodes) take the general loop.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from itertools import chain, compress, islice, repeat, takewhile
from operator import is_not, not_
from typing import Iterable, Sequence


def _consume(iterator) -> None:
    """Run an iterator of side effects to its end at C speed."""
    deque(iterator, maxlen=0)


class PrefixCache:
    """Registered entries, the unit -> key index, and the LRU of unreferenced entries."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[int, ...]] = {}
        self._key_of: dict[int, int] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._single = True  # every entry so far holds one unit: the chain-at-once paths apply
        self.cached_units = 0  # units of the entries in the LRU

    def __contains__(self, key: int) -> bool:
        return key in self._entries

    def match(self, keys: Sequence[int], limit: int) -> list[int]:
        """The leading keys (at most limit) that have an entry: the cached prefix."""
        return list(takewhile(self._entries.__contains__, keys[:limit]))

    def leading(self, keys: Iterable[int]) -> int:
        """How many leading keys have an entry (keys may be a lazy iterator: it stops at the
        first miss, so that asking about a long uncached prompt costs one key)."""
        return sum(1 for _ in takewhile(self._entries.__contains__, keys))

    def key_of(self, unit: int) -> int | None:
        """The key of the entry holding unit, if it is registered."""
        return self._key_of.get(unit)

    def units(self, key: int) -> tuple[int, ...]:
        return self._entries[key]

    def chain_units(self, keys: Sequence[int]) -> list[int]:
        """The units of these entries, in order."""
        return list(chain.from_iterable(map(self._entries.__getitem__, keys)))

    def unreferenced_units(self, keys: Sequence[int]) -> int:
        """Units of these entries now waiting in the LRU (a hit takes them out of it)."""
        if self._single:
            return sum(map(self._lru.__contains__, keys))
        return sum(len(self._entries[key]) for key in keys if key in self._lru)

    def unregistered(self, keys: Sequence[int]) -> int:
        """How many leading keys have no entry and repeat no earlier one of them: those that
        register() may take as a chain."""
        entries = self._entries
        if entries.keys().isdisjoint(keys) and len(set(keys)) == len(keys):
            return len(keys)
        seen: set[int] = set()
        for index, key in enumerate(keys):
            if key in entries or key in seen:
                return index
            seen.add(key)
        return len(keys)

    def forget(self, key: int) -> None:
        """Drop a held entry: its holder is about to rewrite part of it. Cached entries below it
        can no longer be reached by a match and wait in the LRU until evicted."""
        for unit in self._entries.pop(key):
            del self._key_of[unit]

    def register(self, keys: Sequence[int], units: Sequence[int], entry_units: int) -> None:
        """Add a chain of entries of entry_units units each (units in key order), for units that
        a running sequence holds (so they are not in the LRU); no key may have an entry."""
        if entry_units == 1:
            self._entries.update(zip(keys, zip(units)))
            self._key_of.update(zip(units, keys))
            return
        self._single = False
        spans = [tuple(units[i : i + entry_units]) for i in range(0, len(units), entry_units)]
        self._entries.update(zip(keys, spans))
        self._key_of.update(zip(units, chain.from_iterable(map(repeat, keys, repeat(entry_units)))))

    def acquire(self, keys: Sequence[int]) -> tuple[int, list[int]]:
        """Sequences take a reference to each of these entries. Return the units of those that
        were unreferenced (they leave the LRU, and the taker is their only holder), and the
        units of those already held (which gain a holder)."""
        lru, entries = self._lru, self._entries
        waiting = list(map(lru.__contains__, keys))
        acquired = list(compress(keys, waiting))
        _consume(map(lru.__delitem__, acquired))
        freed = sum(map(len, map(entries.__getitem__, acquired)))
        self.cached_units -= freed
        held = self.chain_units(list(compress(keys, map(not_, waiting))))
        return freed, held

    def release(self, key: int) -> None:
        """The entry's last reference is gone: it becomes the newest evictable entry."""
        self._lru[key] = None
        self.cached_units += len(self._entries[key])

    def release_units(self, units: list[int]) -> list[int]:
        """Take units that just lost their last running reference, deepest first. An entry
        becomes evictable (release) when its first unit, the last of its units to go, comes by;
        return the units outside the cache, which are free now."""
        key_of = self._key_of
        if key_of.keys().isdisjoint(units):
            return units
        if self._single:
            # One unit per entry: every cached unit releases its own entry, in the order given.
            keys = list(map(key_of.get, units))
            cached = list(map(is_not, keys, repeat(None)))
            released = list(compress(keys, cached))
            self._lru.update(zip(released, repeat(None)))
            self.cached_units += len(released)
            return list(compress(units, map(not_, cached)))
        return self._release_spans(units)

    def _release_spans(self, units: list[int]) -> list[int]:
        """release_units where entries may hold several units."""
        key_of, entries = self._key_of, self._entries
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

    def evict(self, count: int) -> tuple[list[int], list[tuple[int, ...]]]:
        """Drop the least recently used unreferenced entries until at least count units are
        free; return their keys and the units of each, oldest first. The caller checked that
        the LRU holds that many."""
        lru, entries = self._lru, self._entries
        if self._single:
            keys = list(islice(lru, count))
        else:
            keys, found = [], 0
            for key in lru:
                if found >= count:
                    break
                keys.append(key)
                found += len(entries[key])
        _consume(map(lru.__delitem__, keys))
        spans = list(map(entries.pop, keys))
        _consume(map(self._key_of.__delitem__, chain.from_iterable(spans)))
        self.cached_units -= sum(map(len, spans))
        return keys, spans
