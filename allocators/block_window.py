"""Sliding-window release for the block-pool allocators, as a mixin.

A sequence's window start only moves forward. Units that hold only tokens before it are let go
from the front of its unit list (their entries become NO_BLOCK), as free() lets units go: one
reference less each, a registered prefix-cache entry to the cache when that was its last (its
KV is still the KV of that prefix, and a hit walks its chain from the first block, so such an
entry serves a later request only until it or an ancestor is evicted). A unit of a registered
entry goes only with its whole entry, since an entry's units share one reference count: the
segmented allocator's chunk-sized prompt entries release the prompt's KV a chunk at a time.

What a sequence still holds before its window start is its stale region: units dropped ..
ceil(start / unit) - 1 of its list, each holding min(unit, start - first token) stale tokens
for it. A unit counts as stale for the tokens that every holder has passed, so stale(u) is the
least count among its holders when each holder has u in its region, else 0 (someone still reads
it). _stale_by_unit keeps, per unit in some region, each such holder's count; _stale is the sum
of stale(u), kept up to date around every change of a region or of the holders of a unit in
one. A slide changes its sequence's region at the edges only, so a decode step's slide costs a
unit or two whatever the region's length.
"""
from __future__ import annotations

from array import array
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterable, Iterator

from allocators.base import NO_BLOCK, check_slide

if TYPE_CHECKING:  # the record of block_pool, which mixes this in
    from allocators.block_pool import _Seq


class Window:
    """BlockPoolAllocator's slide and stale accounting (a mixin: it works on the allocator's
    units, counts and reference table)."""

    _stale_by_unit: dict[int, dict[int, int]]  # unit -> {seq_id: its stale tokens there}
    _stale: int

    def slide(self, seq_id: int, start: int) -> None:
        seq = self._get(seq_id)
        check_slide(seq_id, seq.start, start, seq.length)
        if start == seq.start:
            return
        unit, old_start, dropped = self._unit, seq.start, seq.dropped
        boundary = start // unit
        registered = seq.next_entry * seq.entry_units
        # Entries of a pending prefill's unwritten part count as registered (they will be once
        # written), so that the window lets go of whole entries there too.
        keyed = min(len(seq.keys), seq.length // (seq.entry_units * unit)) * seq.entry_units
        if boundary < max(registered, keyed):  # inside the (to be) registered entries
            boundary -= boundary % seq.entry_units
        if boundary > registered and seq.next_entry < len(seq.keys):
            # Units of entries not registered yet go: this copy registers no more entries, so
            # that every cached entry keeps its parent.
            seq.keys = ()
        boundary = max(boundary, dropped)
        old_end = -(-old_start // unit)  # one past the region before and after
        end = -(-start // unit)
        if boundary == dropped and end == old_end > dropped and \
                seq.units[end - 1] not in self._shared:
            # A decode step's slide inside the region's last unit, which the sequence alone
            # holds: only that unit's stale count grows.
            self._stale_by_unit[seq.units[end - 1]][seq_id] = start - (end - 1) * unit
            self._stale += start - old_start
            self._logical -= start - old_start
            seq.start = start
            return
        gone = seq.units[dropped:boundary]
        shared = self._shared
        if old_end <= dropped and end <= boundary and not any(u in shared for u in gone):
            # No region before or after (a one-token page, say), and the units let go have
            # no other holder: no stale count changes.
            self._logical -= start - old_start
            seq.start = start
            seq.units[dropped:boundary] = array("i", [NO_BLOCK]) * len(gone)
            seq.dropped = boundary
            self._let_go(gone, unit)
            self._pool.release_empty()
            return
        # Units whose stale count can change: those leaving the region, its last one (its
        # count grows), and those let go that others hold (one holder less).
        edge = range(dropped, min(old_end, boundary))
        touched = self._detach([*(seq.units[j] for j in (*edge, old_end - 1)
                                  if dropped <= j < old_end),
                                *(u for u in gone if u in shared)])
        for j in edge:
            self._unmark_unit(seq.units[j], seq_id)
        self._logical -= start - old_start
        seq.start = start
        if gone:
            seq.units[dropped:boundary] = array("i", [NO_BLOCK]) * len(gone)
            seq.dropped = boundary
            self._let_go(gone, unit)
        new = [seq.units[j] for j in range(max(boundary, old_end - 1), end)]
        for j in range(max(boundary, old_end - 1), end):
            self._mark_unit(seq.units[j], seq_id, min(unit, start - j * unit))
        self._attach([*touched, *new])
        self._pool.release_empty()

    # -- the stale count ---------------------------------------------------------------------

    def _stale_of(self, unit: int) -> int:
        """The tokens of a held unit that every holder has passed."""
        counts = self._stale_by_unit.get(unit)
        if counts is None or len(counts) <= self._shared.get(unit, 0):
            return 0  # a holder without the unit in its region still reads it
        return min(counts.values())

    def _detach(self, units: Iterable[int]) -> list[int]:
        """The units among these in some region, their stale tokens taken out of the total
        until _attach puts them back (after their regions or holders changed)."""
        by_unit = self._stale_by_unit
        touched = [u for u in dict.fromkeys(units) if u in by_unit]
        self._stale -= sum(map(self._stale_of, touched))
        return touched

    def _attach(self, units: Iterable[int]) -> None:
        self._stale += sum(map(self._stale_of, dict.fromkeys(units)))

    def _shared_in_regions(self) -> list[int]:
        """Units in some region that several sequences hold: the only ones whose holders an
        operation on another sequence can change."""
        if not self._shared or not self._stale_by_unit:
            return []
        return list(self._stale_by_unit.keys() & self._shared.keys())

    def _mark_unit(self, unit: int, seq_id: int, count: int) -> None:
        self._stale_by_unit.setdefault(unit, {})[seq_id] = count

    def _unmark_unit(self, unit: int, seq_id: int) -> None:
        counts = self._stale_by_unit.get(unit)
        if counts is not None and counts.pop(seq_id, None) is not None and not counts:
            del self._stale_by_unit[unit]

    def _region(self, seq: _Seq) -> range:
        """Indices of the sequence's stale region in its unit list."""
        return range(seq.dropped, -(-seq.start // self._unit))

    @contextmanager
    def _holding_changes(self, seq_id: int, seq: _Seq) -> Iterator[None]:
        """Around an operation that changes which units the sequence holds (copies, units let
        go, the sequence freed): its region is taken out before and put back after, and the
        stale count of every unit it or the other holders' regions touch is recounted."""
        if not self._stale_by_unit:  # no region anywhere: none to keep
            yield
            return
        region = [seq.units[j] for j in self._region(seq)]
        touched = self._detach(region + self._shared_in_regions())
        for u in region:
            self._unmark_unit(u, seq_id)
        yield
        new = []
        if self._seqs.get(seq_id) is seq:  # still allocated
            unit = self._unit
            for j in self._region(seq):
                new.append(seq.units[j])
                self._mark_unit(seq.units[j], seq_id, min(unit, seq.start - j * unit))
        self._attach([*touched, *new])

    def _fork_regions(self, parent_id: int, child_id: int, parent: _Seq) -> None:
        """The child holds what the parent holds with the same window: each unit of the
        parent's region gains a holder with the parent's count, so no stale count changes."""
        for u in (parent.units[j] for j in self._region(parent)):
            counts = self._stale_by_unit[u]
            counts[child_id] = counts[parent_id]

    def _sharing(self, units: list[int]) -> list[int]:
        """Before units held by others gain a holder outside every region (a prefix hit): the
        units among them in some region, their stale count taken out (_attach after)."""
        return self._detach(units) if self._stale_by_unit else []
