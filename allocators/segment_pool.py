"""Free units (blocks or pages) grouped in segments: physical memory added and released in steps.

A unit is the allocation grain of a non-contiguous allocator. Units live in segments of
`units_per_segment` units (the last segment id may hold fewer, when the budget is not a multiple);
unit u is offset u % units_per_segment of segment u // units_per_segment, so a unit id stays valid
however many segments are added or released around it. A preallocated pool (paged) backs every
segment from the start and never releases one; an on-demand pool (segmented, hybrid) adds the
lowest free segment id when no live segment has a free unit and releases a segment when it holds
no used unit (allocated or cached).

The pool only hands units out and takes them back; who holds a unit (ref counts, the prefix cache)
is the allocator's business. "Used" here means "not free": allocated or cached.
"""
from __future__ import annotations

from heapq import heappop, heappush

import numpy as np


class _Segment:
    """Free units of one segment: a byte per unit (1 = free) and a bound below which none is free.

    Units go out lowest offset first, so ids are deterministic and stay packed low. Ids are global
    (first unit of the segment + offset), so the pool hands them out as they are. A single unit (a
    decode step) is found with bytearray.find; many (a prefill, a sequence given back) are read
    and written through a numpy view of the same bytes, since a loop in Python over thousands of
    one-token pages would dominate a run.
    """

    __slots__ = ("first", "capacity", "free", "lowest", "is_free", "view")

    def __init__(self, first: int, capacity: int) -> None:
        self.first = first
        self.capacity = capacity
        self.free = capacity
        self.lowest = 0  # no free unit below this offset
        self.is_free = bytearray(b"\x01") * capacity
        self.view = np.frombuffer(self.is_free, dtype=np.bool_)

    def take(self, count: int) -> list[int]:
        """Up to count free ids, lowest first."""
        count = min(count, self.free)
        if not count:
            return []
        self.free -= count
        if count == 1:
            offset = self.is_free.find(1, self.lowest)
            self.is_free[offset] = 0
            self.lowest = offset + 1
            return [self.first + offset]
        offsets = self._lowest_free(count)
        self.view[offsets] = False
        self.lowest = int(offsets[-1]) + 1
        return (offsets + self.first).tolist()

    def give(self, units: np.ndarray) -> None:
        """Take back units of this segment."""
        offsets = units - self.first
        self.view[offsets] = True
        self.free += len(offsets)
        self.lowest = min(self.lowest, int(offsets.min()))

    def _lowest_free(self, count: int) -> np.ndarray:
        """The offsets of the count lowest free units (there are that many), scanning windows
        that double in size: a small request in a large, mostly free segment reads little."""
        found = []
        start = self.is_free.find(1, self.lowest)
        span = 2 * count + 64
        while count:
            offsets = np.flatnonzero(self.view[start : start + span])[:count] + start
            found.append(offsets)
            count -= len(offsets)
            start += span
            span *= 2
        return found[0] if len(found) == 1 else np.concatenate(found)


class SegmentPool:
    """The free units of an allocator, by segment, with backed/free/unbacked counts in O(1)."""

    def __init__(self, total_units: int, units_per_segment: int, *, preallocated: bool) -> None:
        if total_units < 0:
            raise ValueError(f"total_units must be >= 0, got {total_units}")
        if units_per_segment < 1:
            raise ValueError(f"units_per_segment must be >= 1, got {units_per_segment}")
        self.units_per_segment = units_per_segment
        self._total = total_units
        self._preallocated = preallocated
        self._dead = list(range(-(-total_units // units_per_segment)))  # sorted: a valid heap
        self._live: dict[int, _Segment] = {}
        self._backed = 0
        self._free = 0
        # The live segment new units come from while it stays the fullest one with a free unit;
        # None once a returned unit may have changed which segment that is.
        self._target: int | None = None
        self._maybe_empty: set[int] = set()
        if preallocated:
            while self._dead:
                self._grow()

    @property
    def backed(self) -> int:
        """Units of the live segments."""
        return self._backed

    @property
    def free(self) -> int:
        """Free units inside live segments."""
        return self._free

    @property
    def unbacked(self) -> int:
        """Units the budget still allows in segments not live now."""
        return self._total - self._backed

    def segments(self) -> tuple[int, ...]:
        return tuple(sorted(self._live))

    def take(self, count: int) -> list[int]:
        """count free units, growing the pool as needed; the caller checked free + unbacked."""
        units: list[int] = []
        while len(units) < count:
            taken = self._live[self._pick()].take(count - len(units))
            units.extend(taken)
            self._free -= len(taken)
        return units

    def give(self, units: list[int]) -> None:
        """Return units; a segment they empty is released by the next release_empty."""
        if not units:
            return
        self._free += len(units)
        self._target = None
        per_segment = self.units_per_segment
        units = np.array(units)
        first, last = int(units.min()) // per_segment, int(units.max()) // per_segment
        if first == last:
            self._give_to(first, units)
            return
        units.sort()  # split by segment: each one's units are a run of the sorted array
        bounds = np.searchsorted(units, np.arange(first, last + 2) * per_segment).tolist()
        for segment_id, start, stop in zip(range(first, last + 1), bounds, bounds[1:]):
            if stop > start:
                self._give_to(segment_id, units[start:stop])

    def _give_to(self, segment_id: int, units: np.ndarray) -> None:
        segment = self._live[segment_id]
        segment.give(units)
        if segment.free == segment.capacity and not self._preallocated:
            self._maybe_empty.add(segment_id)

    def release_empty(self) -> None:
        """Release the segments left with no used unit (called at the end of every operation,
        so a segment emptied by an eviction and refilled in the same operation stays put)."""
        for segment_id in sorted(self._maybe_empty):
            segment = self._live[segment_id]
            if segment.free == segment.capacity:
                del self._live[segment_id]
                heappush(self._dead, segment_id)
                self._backed -= segment.capacity
                self._free -= segment.capacity
                if self._target == segment_id:
                    self._target = None
        self._maybe_empty.clear()

    def _pick(self) -> int:
        """The segment to take the next unit from: the fullest live one with a free unit (lowest
        id on ties), else a new one. Filling the fullest segment first leaves the emptiest ones
        to drain as sequences finish, so that they can be released; spreading new units evenly
        would keep every segment partly used and none could ever be given back."""
        target = self._target
        if target is not None and self._live[target].free:
            return target
        best, best_rank = -1, (0, 0)
        for segment_id, segment in self._live.items():
            free = segment.free
            rank = (segment.capacity - free, -segment_id)
            if free and (best < 0 or rank > best_rank):
                best, best_rank = segment_id, rank
        if best < 0:
            best = self._grow()
        self._target = best
        return best

    def _grow(self) -> int:
        segment_id = heappop(self._dead)
        capacity = min(self.units_per_segment, self._total - segment_id * self.units_per_segment)
        self._live[segment_id] = _Segment(segment_id * self.units_per_segment, capacity)
        self._backed += capacity
        self._free += capacity
        return segment_id
