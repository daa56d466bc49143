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


class _Segment:
    """Free units of one segment: returned offsets in a heap, never used ones above a watermark.

    Every returned offset is below the watermark, so popping the heap first and then the
    watermark hands out the lowest free offset: ids are deterministic and stay packed low.
    """

    __slots__ = ("capacity", "watermark", "returned")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.watermark = 0
        self.returned: list[int] = []

    @property
    def free(self) -> int:
        return self.capacity - self.watermark + len(self.returned)

    def take(self, count: int) -> list[int]:
        """Up to count free offsets, lowest first."""
        returned = self.returned
        if len(returned) >= count:
            return [heappop(returned) for _ in range(count)]
        offsets = [heappop(returned) for _ in range(len(returned))]
        fresh = min(count - len(offsets), self.capacity - self.watermark)
        offsets.extend(range(self.watermark, self.watermark + fresh))
        self.watermark += fresh
        return offsets


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
            segment_id = self._pick()
            base = segment_id * self.units_per_segment
            offsets = self._live[segment_id].take(count - len(units))
            units.extend(base + offset for offset in offsets)
            self._free -= len(offsets)
        return units

    def give(self, unit: int) -> None:
        """Return one unit; its segment is released by the next release_empty if it empties."""
        segment_id, offset = divmod(unit, self.units_per_segment)
        segment = self._live[segment_id]
        heappush(segment.returned, offset)
        self._free += 1
        self._target = None
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
        self._live[segment_id] = _Segment(capacity)
        self._backed += capacity
        self._free += capacity
        return segment_id
