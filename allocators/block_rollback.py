"""Truncation (speculative-decoding rollback) for the block-pool allocators, as a mixin.

A sequence keeps its first num_tokens tokens. Units past them are let go exactly as free() lets a
sequence's units go. The kept unit the cut falls in is rewritten in place from then on when the
sequence alone holds it; when others hold it (a fork's shared block, or a prefix-cache entry
others hit) the sequence gets a copy instead, so nobody reads a token rewritten under them. A
registered prefix-cache entry cut partway by its only holder leaves the cache, since its holder
will rewrite the cut part.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from allocators.base import BlockCopy

if TYPE_CHECKING:  # the record of block_pool, which mixes this in
    from allocators.block_pool import _Seq


class Rollback:
    """BlockPoolAllocator's truncate (a mixin: it works on the allocator's units and counts)."""

    def truncate(self, seq_id: int, num_tokens: int) -> None:
        seq = self._get(seq_id)
        length, unit, units = seq.length, self._unit, seq.units
        if not max(1, seq.start) <= num_tokens <= length:
            raise ValueError(f"seq {seq_id}: cannot keep {num_tokens} of its {length} tokens "
                             f"(its window starts at {seq.start})")
        if num_tokens == length:
            return
        keep = -(-num_tokens // unit)  # units that hold a kept token
        cut_key = self._cut_entry_key(seq, num_tokens)
        start = self._copy_start(seq, num_tokens, keep, cut_key is not None)
        if start < keep:  # the units cut loose count: their space comes back first
            freed = sum(1 for u in units[keep:] if u not in self._shared)
            self._require(seq_id, keep - start - freed, 0)
        with self._holding_changes(seq_id, seq):  # nothing below can fail
            self._cut(seq, num_tokens, keep, start, cut_key)

    def _cut(self, seq: _Seq, num_tokens: int, keep: int, start: int,
             cut_key: int | None) -> None:
        """truncate's changes, checked: units past keep let go, units from start copied."""
        length, unit, units = seq.length, self._unit, seq.units
        if cut_key is not None and start == keep:
            self._cache.forget(cut_key)  # its only holder will rewrite the cut part in place
        seq.next_entry = min(seq.next_entry, num_tokens // (seq.entry_units * unit))
        if keep < len(units):
            self._let_go(units[keep:], length - (len(units) - 1) * unit)
            del units[keep:]
        if start < keep:
            # Shared units cut partway: the others keep reading them, this sequence reads copies.
            shared = units[start:]
            for u in shared:
                self._unshare(u)
            del units[start:]
            units.extend(self._take(keep - start))
            for i, (src, dst) in enumerate(zip(shared, units[start:])):
                tokens = min(unit, num_tokens - (start + i) * unit)
                self._block_copies.append(BlockCopy(src, dst, tokens))
            rewind = start
        else:
            rewind = keep - 1 if num_tokens % unit else keep
            if rewind < keep:  # a private tail cut partway: written in place from now on
                self._live -= min(unit, length - rewind * unit)
                if units[rewind] in self._unwritten:
                    self._drop_unwritten(units[rewind])
        self._logical -= length - rewind * unit
        seq.length = rewind * unit
        if seq.unwritten is not None and seq.unwritten >= num_tokens:
            seq.unwritten = None  # what is kept is written
        self._advance(seq, num_tokens - rewind * unit)
        self._pool.release_empty()

    def _cut_entry_key(self, seq: _Seq, num_tokens: int) -> int | None:
        """The key of the prefix-cache entry the sequence holds that keeping num_tokens cuts
        partway, if any (entries before next_entry are registered)."""
        entry_tokens = seq.entry_units * self._unit
        index = num_tokens // entry_tokens
        if not num_tokens % entry_tokens or index >= seq.next_entry:
            return None
        return self._cache.key_of(seq.units[index * seq.entry_units])

    def _copy_start(self, seq: _Seq, num_tokens: int, keep: int, cuts_entry: bool) -> int:
        """The first kept unit the sequence must copy rather than rewrite in place: the units of
        a cut entry others hold (an entry's units share one count), or a shared unit cut
        partway; keep when there is none."""
        if cuts_entry:
            first = num_tokens // (seq.entry_units * self._unit) * seq.entry_units
            held = seq.units[first : first + seq.entry_units]
            return keep if self._shared.keys().isdisjoint(held) else first
        if num_tokens % self._unit and seq.units[keep - 1] in self._shared:
            return keep - 1
        return keep
