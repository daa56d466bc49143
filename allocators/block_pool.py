"""The machinery shared by the paged, segmented and hybrid allocators.

A sequence holds a list of units (blocks, or pages) taken from a SegmentPool. Units are ref
counted, so a fork or a prefix-cache hit shares them instead of copying; a partly written unit
shared by a fork is copied when one of its holders writes next (copy-on-write), so the others
keep reading the tokens they had. Full units that hold hashed prompt chunks are registered in a
PrefixCache once their KV is written and, once no sequence holds them, wait there until a free
unit is needed and they are evicted, least recently used first. A prefill allocated ahead
(allocate with pending) is written chunk by chunk: its entries are registered as written()
reports their KV, so that a sequence let go midway (a preemption) leaves no entry over KV that was
never written. With a host tier (block_offload), an evicted entry keeps its KV in host memory, and
a prefix hit that reaches past the device's entries into the host's brings it back into a fresh
unit.

The three allocators differ only in where units come from (one preallocated segment, or segments
added on demand) and in the span of a prefix-cache entry (one block, or a chunk of pages).
Prefix-cache entries (block_prefix), truncation (block_rollback) and the sliding window
(block_window) are mixins over the same state.

Every operation checks that it can get all the units it needs before it changes anything, so an
OutOfKVMemory leaves the state (LRU order and prefix cache included) exactly as it was. The usage
figures are kept as running totals, so usage() and a decode step's extend() are O(1).
"""
from __future__ import annotations

from array import array
from itertools import chain
from typing import Sequence

from allocators.base import (
    Allocator, BlockCopy, HostCopy, OutOfKVMemory, SeqLayout, Usage, split_allocated,
)
from allocators.block_offload import Offload
from allocators.block_prefix import PrefixEntries
from allocators.block_rollback import Rollback
from allocators.block_window import Window
from allocators.prefix_cache import PrefixCache
from allocators.segment_pool import SegmentPool


class _Seq:
    __slots__ = ("units", "length", "final_tokens", "keys", "entry_units", "next_entry", "start",
                 "dropped", "unwritten")

    def __init__(self, units, length, final_tokens, keys, entry_units, next_entry, start=0,
                 dropped=0, unwritten=None) -> None:
        self.units = array("i", units)  # NO_BLOCK where a slide let a unit go
        self.length: int = length  # tokens written
        self.final_tokens: int | None = final_tokens
        self.keys: Sequence[int] = keys  # prefix-cache keys of its hashed prompt entries
        self.entry_units: int = entry_units  # units per prefix-cache entry
        self.next_entry: int = next_entry  # index of the first entry it has not registered
        self.start: int = start  # the window start: tokens before it are never read again
        self.dropped: int = dropped  # leading units let go by slides
        # The first token of a pending prefill whose KV nobody has reported written (None: all
        # are written): no entry past it is registered.
        self.unwritten: int | None = unwritten


class BlockPoolAllocator(Offload, PrefixEntries, Rollback, Window, Allocator):
    """Ref-counted units with copy-on-write forks and a prefix cache, over a SegmentPool."""

    def __init__(
        self, budget_slots: int, unit_tokens: int, pool: SegmentPool, *, enable_prefix_cache: bool,
        host_cache_slots: int = 0,
    ) -> None:
        if budget_slots < 0:
            raise ValueError(f"budget_slots must be >= 0, got {budget_slots}")
        self._budget = budget_slots
        self._unit = unit_tokens
        self._pool = pool
        self._cache = PrefixCache() if enable_prefix_cache else None
        self._host = self._host_tier(host_cache_slots, unit_tokens, enable_prefix_cache)
        self._seqs: dict[int, _Seq] = {}
        self._block_copies: list[BlockCopy] = []
        self._host_copies: list[HostCopy] = []
        # Held units -> running references beyond the first, for units that several sequences
        # hold (forks, prefix hits). Most units have one holder and no entry, so that taking
        # and giving back thousands of one-token pages stays a bulk operation.
        self._shared: dict[int, int] = {}
        # Partly written units -> (reserved, internal) slots of their unwritten tail. Keyed by
        # unit, so a tail shared by forks is counted once.
        self._unwritten: dict[int, tuple[int, int]] = {}
        self._live = 0  # written tokens held, stale ones included
        self._logical = 0
        self._reserved = 0
        self._internal = 0
        self._stale_by_unit: dict[int, dict[int, int]] = {}  # see block_window
        self._stale = 0

    @property
    def block_size(self) -> int:
        return self._unit

    @property
    def blocks_per_segment(self) -> int:
        return self._pool.units_per_segment

    # -- the contract --------------------------------------------------------------------------

    def allocate(
        self,
        seq_id: int,
        num_tokens: int,
        *,
        final_tokens: int | None = None,
        prefix_hashes: Sequence[int] | None = None,
        chunk_tokens: int = 0,
        prompt_tokens: int | None = None,
        pending: bool = False,
    ) -> int:
        if seq_id in self._seqs:
            raise ValueError(f"seq_id {seq_id} is already allocated")
        self._check_new(num_tokens, final_tokens)
        entry_units = self._entry_units(chunk_tokens)
        entry_tokens = entry_units * self._unit
        keys = self._keys(prefix_hashes, chunk_tokens, entry_tokens,
                          num_tokens if prompt_tokens is None else prompt_tokens)
        cache, host = self._cache, self._host
        limit = num_tokens // entry_tokens
        hits = cache.match(keys, limit) if keys else []
        # Entries past the device's hits that the host holds come back into fresh units.
        host_hits = host.match(keys[len(hits) : limit]) if host is not None and keys else []
        hit_units = cache.chain_units(hits) if hits else []
        need = -(-num_tokens // self._unit) - len(hit_units)
        self._require(seq_id, need, cache.unreferenced_units(hits) if hits else 0)
        host_spans = host.pin(host_hits) if host_hits else []

        held_units = len(hit_units)  # the sequence's unit list starts as hit_units
        hit_tokens = held_units * self._unit
        if hits:
            # Units that waited in the LRU have this sequence as their only holder.
            unreferenced, held = cache.acquire(hits)
            self._live += unreferenced * self._unit
            touched = self._sharing(held)
            self._share(held)
            self._attach(touched)
        # Host hits are written too: their copies run before the step that reads them.
        restored = hit_tokens + len(host_hits) * entry_tokens
        seq = _Seq(hit_units, hit_tokens, final_tokens, keys, entry_units, len(hits),
                   unwritten=restored if pending and restored < num_tokens else None)
        self._seqs[seq_id] = seq
        self._logical += hit_tokens
        seq.units.extend(self._take(need))
        if host_hits:
            self._bring_back(seq.units[held_units:], host_hits, host_spans)
        self._advance(seq, num_tokens - hit_tokens)
        self._pool.release_empty()
        return restored

    def can_allocate(self, num_tokens: int, *, final_tokens: int | None = None) -> bool:
        self._check_new(num_tokens, final_tokens)
        return -(-num_tokens // self._unit) <= self._obtainable(0)

    def extend(self, seq_id: int, num_tokens: int = 1) -> None:
        seq = self._get(seq_id)
        if num_tokens == 1 and seq.next_entry >= len(seq.keys) and self._decode_step(seq):
            return
        if num_tokens < 1:
            if num_tokens < 0:
                raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
            return
        unit = self._unit
        tail = seq.units[-1]
        written = seq.length - (len(seq.units) - 1) * unit  # tokens in the last unit
        if written < unit and tail in self._shared:
            need = -(-(written + num_tokens) // unit)
            self._require(seq_id, need, 0)
            with self._holding_changes(seq_id, seq):
                self._write_after_copy(seq, tail, written, num_tokens, need)
            return
        need = -(-(num_tokens - unit + written) // unit)
        if need > 0:
            self._require(seq_id, need, 0)
            seq.units.extend(self._take(need))
            self._advance(seq, num_tokens)
            self._pool.release_empty()  # an eviction may have emptied a segment
        else:  # a decode step inside the last unit: nothing to take, nothing to release
            self._advance(seq, num_tokens)

    def written(self, seq_id: int, num_tokens: int) -> None:
        seq = self._get(seq_id)
        if not 0 <= num_tokens <= seq.length:
            raise ValueError(f"seq {seq_id}: {num_tokens} tokens written of its {seq.length}")
        if seq.unwritten is None or num_tokens <= seq.unwritten:
            return
        seq.unwritten = num_tokens if num_tokens < seq.length else None
        if seq.next_entry < len(seq.keys):
            self._register(seq)

    def fork(self, parent_id: int, child_id: int) -> None:
        parent = self._get(parent_id)
        if child_id in self._seqs:
            raise ValueError(f"seq_id {child_id} is already allocated")
        self._share(parent.units[parent.dropped:])
        self._seqs[child_id] = _Seq(
            parent.units, parent.length, parent.final_tokens, parent.keys,
            parent.entry_units, parent.next_entry, parent.start, parent.dropped,
            parent.unwritten,
        )
        self._logical += parent.length - parent.start
        if self._stale_by_unit:
            self._fork_regions(parent_id, child_id, parent)

    def free(self, seq_id: int) -> None:
        seq = self._get(seq_id)
        del self._seqs[seq_id]
        self._logical -= seq.length - seq.start
        with self._holding_changes(seq_id, seq):
            self._let_go(seq.units[seq.dropped:],
                         seq.length - (len(seq.units) - 1) * self._unit)
        self._pool.release_empty()

    def layout(self, seq_id: int) -> SeqLayout:
        seq = self._get(seq_id)
        return SeqLayout(self._unit, self.blocks_per_segment, seq.units[:])

    def length(self, seq_id: int) -> int:
        return self._get(seq_id).length

    def usage(self) -> Usage:
        unit, pool = self._unit, self._pool
        free = pool.free * unit
        return Usage(budget=self._budget, backed=pool.backed * unit,
            live=self._live - self._stale,
            logical=self._logical,
            reserved=self._reserved,
            internal=self._internal,
            cached=self._cache.cached_units * unit if self._cache is not None else 0,
            free=free,
            largest_free_run=free,  # any free unit serves: no external fragmentation
            stale=self._stale,
        )

    def segments(self) -> tuple[int, ...]:
        return self._pool.segments()

    # -- helpers -------------------------------------------------------------------------------

    def _get(self, seq_id: int) -> _Seq:
        try:
            return self._seqs[seq_id]
        except KeyError:
            raise ValueError(f"unknown seq_id {seq_id}") from None

    @staticmethod
    def _check_new(num_tokens: int, final_tokens: int | None) -> None:
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        if final_tokens is not None and final_tokens < num_tokens:
            raise ValueError(f"final_tokens {final_tokens} < num_tokens {num_tokens}")

    def _obtainable(self, hit_cached_units: int) -> int:
        """Units an operation can get: free, not yet backed, and evictable other than its hits."""
        cached = self._cache.cached_units if self._cache is not None else 0
        return self._pool.free + self._pool.unbacked + cached - hit_cached_units

    def _require(self, seq_id: int, need: int, hit_cached_units: int) -> None:
        if need > self._obtainable(hit_cached_units):
            cached = self._cache.cached_units if self._cache is not None else 0
            raise OutOfKVMemory(
                f"seq {seq_id}: needs {need} units of {self._unit} slots; {self._pool.free} "
                f"free, {self._pool.unbacked} not yet backed, {cached - hit_cached_units} "
                f"evictable"
            )

    def _take(self, count: int) -> list[int]:
        """count fresh units (one holder): free ones first, then a new segment, then evictions."""
        if not count:
            return []
        pool = self._pool
        short = count - pool.free - pool.unbacked
        if short > 0:
            keys, spans = self._cache.evict(short)
            if self._host is not None:
                self._offload(keys, spans)
            pool.give(list(chain.from_iterable(spans)))
        return pool.take(count)

    def _advance(self, seq: _Seq, count: int) -> None:
        """Write count tokens: the units are there, any shared partial tail was copied."""
        unit = self._unit
        if seq.length % unit:
            self._drop_unwritten(seq.units[seq.length // unit])
        seq.length += count
        self._live += count
        self._logical += count
        if seq.length % unit:
            start = (len(seq.units) - 1) * unit
            final = seq.final_tokens
            reserved, internal = split_allocated(
                unit, seq.length - start, None if final is None else final - start
            )
            self._unwritten[seq.units[-1]] = (reserved, internal)
            self._reserved += reserved
            self._internal += internal
        if seq.next_entry < len(seq.keys):
            self._register(seq)

    def _write_after_copy(self, seq: _Seq, tail: int, written: int, num_tokens: int,
                          need: int) -> None:
        """Write num_tokens after a tail that a fork shares, partly written: this sequence
        rewrites the tail's tokens into a private copy (reported); the other holders keep the
        original and its unwritten-slot accounting. The caller checked the need units."""
        seq.units.pop()
        self._unshare(tail)
        seq.length -= written
        self._logical -= written
        new = self._take(need)
        seq.units.extend(new)
        self._block_copies.append(BlockCopy(tail, new[0], written))
        self._advance(seq, written + num_tokens)
        self._pool.release_empty()  # an eviction may have emptied a segment

    def _decode_step(self, seq: _Seq) -> bool:
        """Write one token on the quick path of a decode step, if it applies; return whether it
        did. The caller checked that no prefix entry is left to register. The general path is
        needed for a shared tail (copy-on-write) and for a new unit that only an eviction can
        provide; what is done here is what it would do, step by step. A new unit may come from a
        new segment: with one-token segments that is every decode step."""
        length = seq.length
        if not length % self._unit:  # the tail is full: the token starts a new unit
            if not (self._pool.free or self._pool.unbacked):
                return False
            seq.units.extend(self._pool.take(1))
            self._advance(seq, 1)
            return True
        tail = seq.units[-1]
        if tail in self._shared:
            return False
        # One unwritten slot of the tail is written: a reserved one while any is left, as
        # split_allocated would count it one token later.
        reserved, internal = self._unwritten[tail]
        if reserved:
            reserved -= 1
            self._reserved -= 1
        else:
            internal -= 1
            self._internal -= 1
        if reserved or internal:
            self._unwritten[tail] = (reserved, internal)
        else:
            del self._unwritten[tail]
        seq.length = length + 1
        self._live += 1
        self._logical += 1
        return True

    def _let_go(self, units: list[int], tail_written: int) -> None:
        """Drop one reference to each of units, the end of a sequence's list (its last unit
        holds tail_written tokens) or the front a slide lets go (tail_written: a whole unit).
        Units that lose their last reference go, deepest first, so that a cached entry enters
        the LRU after its descendants and is evicted after them (see prefix_cache): to the
        prefix cache when registered, else back to the pool."""
        unit_tokens, shared = self._unit, self._shared
        if not shared or shared.keys().isdisjoint(units):
            released = units[::-1]
        else:
            released = [unit for unit in reversed(units) if unit not in shared]
            for unit in shared.keys() & units:
                self._unshare(unit)
        # Every unit but the last is full; the last is partly written when tail_written says so.
        self._live -= len(released) * unit_tokens
        if released and released[0] == units[-1] and tail_written < unit_tokens:
            self._live += unit_tokens - tail_written
            self._drop_unwritten(units[-1])
        if self._cache is not None:
            released = self._cache.release_units(released)
        self._pool.give(released)

    def _share(self, units: Sequence[int]) -> None:
        """Another sequence takes a reference to each of these held units."""
        shared = self._shared
        for unit in units:
            shared[unit] = shared.get(unit, 0) + 1

    def _unshare(self, unit: int) -> None:
        """One of several holders of unit lets it go."""
        extra = self._shared[unit] - 1
        if extra:
            self._shared[unit] = extra
        else:
            del self._shared[unit]

    def _drop_unwritten(self, unit: int) -> None:
        reserved, internal = self._unwritten.pop(unit)
        self._reserved -= reserved
        self._internal -= internal
