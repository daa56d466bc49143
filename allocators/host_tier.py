"""The CPU tier of the prefix cache: entries evicted from device memory, kept in host blocks.

When the device prefix cache evicts an entry (PrefixCache.evict), its KV is copied to host
memory instead of being lost, into blocks of a bounded host pool (blocks as large as the
allocator's units). A prompt whose prefix walks past the device-cached entries into entries held
here gets them back by a host-to-device copy into fresh device units instead of a prefill. The
allocator reports both copies (base.HostCopy); this class only decides which host blocks hold
what.

The tier is inclusive: an entry brought back to the device stays here too (equal keys mean equal
KV, so the host copy stays valid), and evicting it from the device again costs no copy. Entries
wait in an LRU, oldest first, and the oldest go when a new entry needs room. They arrive in the
device's eviction order, deepest first, and a hit renews a chain deepest first, so that, as on
the device (see prefix_cache), the oldest entry is a leaf: an entry leaves only after its cached
descendants did, and no entry left here waits below a missing parent.

A sliding window breaks that order on purpose, as on the device: a slide lets a chain's first
entries go to the LRU while its sequence holds the later ones, so the device evicts (and this
tier receives) roots before their descendants, and an entry may wait here below a missing
parent, or behind a root held here while its child stays on the device. Neither is wrong, since
a key names its whole prefix: a match walks from the first key past the device's hits and stops
at the first entry held in neither place, so such entries cost room until they go. A hit that
brings a chain's first entries back registers them on the device again, which makes the
device's later entries reachable once more.
"""
from __future__ import annotations

from collections import OrderedDict
from itertools import chain, takewhile
from typing import Iterable, Sequence

import numpy as np

from allocators.segment_pool import lowest_set


class HostTier:
    """Host blocks 0..num_blocks-1, the entries they hold (key -> blocks) and their LRU."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"a host tier needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self._entries: OrderedDict[int, tuple[int, ...]] = OrderedDict()
        self._free = bytearray(b"\x01") * num_blocks  # 1 while the block holds nothing
        self._free_view = np.frombuffer(self._free, dtype=np.bool_)
        self._lowest = 0  # no free block below this id
        self.free_blocks = num_blocks
        self._pinned = 0  # blocks of entries taken out of the LRU by pin()

    def __contains__(self, key: int) -> bool:
        return key in self._entries

    def match(self, keys: Sequence[int]) -> list[int]:
        """The leading keys held here."""
        return list(takewhile(self._entries.__contains__, keys))

    def leading(self, keys: Iterable[int]) -> int:
        return sum(1 for _ in takewhile(self._entries.__contains__, keys))

    def pin(self, keys: Sequence[int]) -> list[tuple[int, ...]]:
        """Take held entries out of the LRU while they are being read (store() cannot evict
        them); return their blocks. unpin() puts them back."""
        spans = list(map(self._entries.pop, keys))
        self._pinned += sum(map(len, spans))
        return spans

    def unpin(self, keys: Sequence[int], spans: Sequence[tuple[int, ...]]) -> None:
        """Put pinned entries back as the newest, the deepest first (a chain's root is the
        last to go)."""
        for key, span in zip(reversed(keys), reversed(spans)):
            self._entries[key] = span
        self._pinned -= sum(map(len, spans))

    def store(self, keys: Sequence[int], spans: Sequence[Sequence[int]]) -> tuple[list[int],
                                                                               list[int]]:
        """Keep entries evicted from the device (their keys and device units, in eviction
        order, deepest first). Return the device units to copy and the host block each goes
        to. An entry held here already is only renewed. When they cannot all be held, the
        entries evicted last (the shallowest, which more prompts share) are kept."""
        room = self.num_blocks - self._pinned
        start, total = len(keys), 0
        while start and total + len(spans[start - 1]) <= room:
            start -= 1
            total += len(spans[start])
        keys, spans = keys[start:], spans[start:]
        entries = self._entries
        if entries.keys().isdisjoint(keys):  # an eviction's usual case
            return self._store_new(keys, spans)
        units: list[int] = []
        blocks: list[int] = []
        new = 0  # the first key of the run of keys not held, up to the current one
        for index, key in enumerate(keys):
            if key not in entries:
                continue
            stored = self._store_new(keys[new:index], spans[new:index])
            units += stored[0]
            blocks += stored[1]
            if key in entries:
                entries.move_to_end(key)
                new = index + 1
            else:  # dropped to make room for the run before it: stored with the next run
                new = index
        stored = self._store_new(keys[new:], spans[new:])
        return units + stored[0], blocks + stored[1]

    def _store_new(self, keys: Sequence[int], spans: Sequence[Sequence[int]]) -> tuple[
            list[int], list[int]]:
        """Hold entries none of which is held, in one take of host blocks."""
        units = list(chain.from_iterable(spans))
        if not units:
            return [], []
        self._make_room(len(units))
        blocks = self._take(len(units))
        if len(units) == len(keys):
            self._entries.update(zip(keys, zip(blocks)))
        else:
            ends = np.cumsum(list(map(len, spans))).tolist()
            self._entries.update(
                zip(keys, (tuple(blocks[a:b]) for a, b in zip([0, *ends], ends))))
        return units, blocks

    def _make_room(self, count: int) -> None:
        """Drop the oldest entries until count blocks are free."""
        if self.free_blocks >= count:
            return
        freed: list[int] = []
        while self.free_blocks + len(freed) < count:
            freed.extend(self._entries.popitem(last=False)[1])
        index = np.asarray(freed, dtype=np.int64)
        self._free_view[index] = True
        self.free_blocks += len(freed)
        self._lowest = min(self._lowest, int(index.min()))

    def _take(self, count: int) -> list[int]:
        """count free blocks, lowest ids first (runs of consecutive blocks copy in one go)."""
        blocks = lowest_set(self._free, self._free_view, self._lowest, count)
        self._free_view[blocks] = False
        self.free_blocks -= count
        self._lowest = int(blocks[-1]) + 1
        return blocks.tolist()
