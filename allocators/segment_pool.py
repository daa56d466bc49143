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


# Up to this many units are found one bytearray.find at a time: below it a numpy scan costs more
# than it saves (filling the last few holes of a segment is common with small segments).
FIND_ONE_BY_ONE = 8


def lowest_set(flags: bytearray, view: np.ndarray, start: int, count: int) -> np.ndarray:
    """The indices of the first count set bytes of flags at or after start (fewer where flags
    ends first). view is flags as numpy booleans. Windows double in size from the first set byte,
    so a small request in a large, mostly clear array reads little."""
    start = flags.find(1, start)
    if count == 1 or start < 0:
        return np.array([start] if start >= 0 else [], dtype=np.int64)
    found = []
    span = 2 * count + 64
    while count and start < len(flags):
        indices = np.flatnonzero(view[start : start + span])[:count] + start
        found.append(indices)
        count -= len(indices)
        start += span
        span *= 2
    return found[0] if len(found) == 1 else np.concatenate(found)


class SegmentPool:
    """The free units of an allocator, by segment, with backed/free/unbacked counts in O(1).

    Which segment the next unit comes from (see take) is found without scanning the segments:
    a segment is in one of four states, each kept where its next candidate is cheap to find.
      - partial (live, some units used, some free): a heap keyed (-used, id), so the fullest
        comes first. Entries are never removed when a segment changes; an entry whose key no
        longer matches its segment is stale and dropped when it reaches the top. The target
        (the partial segment being filled) is held apart from the heap until its turn ends.
      - empty (live, no unit used): a byte per segment, taken lowest id first.
      - dead (not live): a byte per segment, added lowest id first.
      - full: in no structure, since nothing can come from it.
    Empty and dead segments are drained whole in id order, so a prefill over many small segments
    is a few numpy operations rather than a loop over its segments.
    """

    def __init__(self, total_units: int, units_per_segment: int, *, preallocated: bool) -> None:
        if total_units < 0:
            raise ValueError(f"total_units must be >= 0, got {total_units}")
        if units_per_segment < 1:
            raise ValueError(f"units_per_segment must be >= 1, got {units_per_segment}")
        self.units_per_segment = units_per_segment
        self._total = total_units
        self._preallocated = preallocated
        num_segments = -(-total_units // units_per_segment)
        # A byte per unit: 1 while the unit is not used (a dead segment's units are all 1).
        self._unit_free = bytearray(b"\x01") * total_units
        self._unit_free_view = np.frombuffer(self._unit_free, dtype=np.bool_)
        self._capacity = np.full(num_segments, units_per_segment, dtype=np.int64)
        if num_segments:
            self._capacity[-1] = total_units - (num_segments - 1) * units_per_segment
        self._used = np.zeros(num_segments, dtype=np.int64)
        self._lowest = np.zeros(num_segments, dtype=np.int64)  # no free unit below this offset
        self._dead = bytearray(b"\x00" if preallocated else b"\x01") * num_segments
        self._dead_view = np.frombuffer(self._dead, dtype=np.bool_)
        self._empty = bytearray(b"\x01" if preallocated else b"\x00") * num_segments
        self._empty_view = np.frombuffer(self._empty, dtype=np.bool_)
        self._num_empty = num_segments if preallocated else 0
        self._num_live = num_segments if preallocated else 0
        self._lowest_dead = 0  # no dead segment below this id
        self._lowest_empty = 0  # no empty segment below this id
        self._partial: list[tuple[int, int]] = []  # heap of (-used, id); see the class docstring
        # The segment new units come from while it has a free unit: always the fullest segment
        # with a free unit, so it needs no heap entry until a returned unit ends its turn. During
        # its turn its figures live in plain ints (a decode step takes one unit at a time) and
        # _used and _lowest hold stale values for it.
        self._target: int | None = None
        self._target_free = 0
        self._target_next = 0  # no free unit of the target below this unit id
        self._maybe_empty: list[np.ndarray] = []  # segments emptied since the last release
        self._backed = total_units if preallocated else 0
        self._free = self._backed

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
        return tuple(np.flatnonzero(~self._dead_view).tolist())

    # -- taking units --------------------------------------------------------------------------

    def take(self, count: int) -> list[int]:
        """count free units, growing the pool as needed; the caller checked free + unbacked.

        The units come from the fullest live segment with a free unit (lowest id on ties), then
        the next fullest, and so on; then from new segments, lowest free id first. Filling the
        fullest segment first leaves the emptiest ones to drain as sequences finish, so that they
        can be released; spreading new units evenly would keep every segment partly used and
        none could ever be given back."""
        if count == 1:  # a decode step: the quick paths of the general one below
            if self._target_free or (self._partial and self._next_partial()):
                return [self._take_one()]
            if not self._num_empty:
                return [self._grow_one()]
        units: list[int] = []
        while len(units) < count and (self._target_free or self._next_partial()):
            units.extend(self._take_from_target(count - len(units)))
        if len(units) < count and self._num_empty:
            units.extend(self._take_whole(count - len(units), grow=False))
        if len(units) < count:
            units.extend(self._take_whole(count - len(units), grow=True))
        if len(units) < count:
            raise ValueError(f"take({count}): only {len(units)} units free or unbacked")
        return units

    def _next_partial(self) -> bool:
        """Make the fullest partial segment (lowest id on ties) the target; False if none is."""
        self._end_turn()
        heap = self._partial
        while heap:
            key, segment_id = heappop(heap)
            used = self._used[segment_id]
            # Current if it is still partial with -key units used (a dead or empty segment has
            # none used, and keys are only made for partial segments).
            if used == -key and used < self._capacity[segment_id]:
                first = segment_id * self.units_per_segment
                self._begin_turn(segment_id, int(self._capacity[segment_id] - used),
                                 first + int(self._lowest[segment_id]))
                return True
        return False

    def _begin_turn(self, segment_id: int, free: int, next_unit: int) -> None:
        self._end_turn()  # a target drained by this take still has its figures to write back
        self._target = segment_id
        self._target_free = free
        self._target_next = next_unit

    def _end_turn(self) -> None:
        """Write the target's figures back; a target with units left goes back to the heap."""
        target = self._target
        if target is None:
            return
        self._target = None
        self._used[target] = self._capacity[target] - self._target_free
        if self._target_free:  # a full segment needs no bound: any is below its next free unit
            self._lowest[target] = self._target_next - target * self.units_per_segment
            self._push_partial(target)
            self._target_free = 0

    def _take_one(self) -> int:
        """One free unit of the target, lowest first."""
        unit = self._unit_free.find(1, self._target_next)
        self._unit_free[unit] = 0
        self._target_next = unit + 1
        self._target_free -= 1
        self._free -= 1
        return unit

    def _take_from_target(self, count: int) -> list[int]:
        """Up to count free units of the target, lowest first."""
        count = min(count, self._target_free)
        if count <= FIND_ONE_BY_ONE:
            return [self._take_one() for _ in range(count)]
        units = lowest_set(self._unit_free, self._unit_free_view, self._target_next, count)
        self._unit_free_view[units] = False
        self._target_next = int(units[-1]) + 1
        self._target_free -= count
        self._free -= count
        return units.tolist()

    def _take_whole(self, count: int, *, grow: bool) -> list[int]:
        """Up to count units from empty segments (grow=False) or new ones (grow=True), lowest id
        first, each drained before the next: every segment but the last one is taken whole."""
        if count <= self.units_per_segment:
            return self._take_one_whole(count, grow=grow)
        flags, view, lowest = (
            (self._dead, self._dead_view, self._lowest_dead) if grow
            else (self._empty, self._empty_view, self._lowest_empty)
        )
        segment_ids = lowest_set(flags, view, lowest, -(-count // self.units_per_segment))
        if not segment_ids.size:
            return []
        last = int(segment_ids[-1])
        in_last = min(count - (len(segment_ids) - 1) * self.units_per_segment,
                      int(self._capacity[last]))
        view[segment_ids] = False
        self._mark_taken(len(segment_ids), int(self._capacity[segment_ids].sum()), last, grow)
        units = self._whole_units(segment_ids, in_last)
        self._unit_free_view[units] = False
        self._used[segment_ids] = self._capacity[segment_ids]
        self._lowest[segment_ids] = self._capacity[segment_ids]
        self._free -= len(units)
        # The last one is the only partial segment now, if it is partial.
        self._begin_turn(last, int(self._capacity[last]) - in_last, int(units[-1]) + 1)
        return units.tolist()

    def _take_one_whole(self, count: int, *, grow: bool) -> list[int]:
        """_take_whole for a count that one segment holds, without numpy arrays: a decode step
        over one-token segments makes a new segment per token."""
        flags = self._dead if grow else self._empty
        segment_id = flags.find(1, self._lowest_dead if grow else self._lowest_empty)
        if segment_id < 0:
            return []
        flags[segment_id] = 0
        first = segment_id * self.units_per_segment
        capacity = min(self.units_per_segment, self._total - first)
        self._mark_taken(1, capacity, segment_id, grow)
        count = min(count, capacity)
        self._unit_free[first : first + count] = bytes(count)
        self._free -= count
        self._begin_turn(segment_id, capacity - count, first + count)
        return list(range(first, first + count))

    def _grow_one(self) -> int:
        """The first unit of a new segment, when no live segment has a free one: _take_one_whole(1,
        grow=True) in one function, since with one-unit segments every decode step does it."""
        self._end_turn()
        segment_id = self._dead.find(1, self._lowest_dead)
        self._dead[segment_id] = 0
        self._lowest_dead = segment_id + 1
        self._num_live += 1
        first = segment_id * self.units_per_segment
        capacity = min(self.units_per_segment, self._total - first)
        self._backed += capacity
        self._free += capacity - 1
        self._unit_free[first] = 0
        self._target, self._target_free, self._target_next = segment_id, capacity - 1, first + 1
        return first

    def _mark_taken(self, num_segments: int, units: int, last: int, grow: bool) -> None:
        """Count num_segments (of units in all, last the highest id) as no longer dead or empty."""
        if grow:
            self._lowest_dead = last + 1
            self._num_live += num_segments
            self._backed += units
            self._free += units
        else:
            self._lowest_empty = last + 1
            self._num_empty -= num_segments

    def _whole_units(self, segment_ids: np.ndarray, in_last: int) -> np.ndarray:
        """The units of these segments (all whole, since only the last id may be short), but only
        the first in_last of the last one."""
        per_segment = self.units_per_segment
        first_of_last = int(segment_ids[-1]) * per_segment
        tail = np.arange(first_of_last, first_of_last + in_last)
        if len(segment_ids) == 1:
            return tail
        whole = segment_ids[:-1, None] * per_segment + np.arange(per_segment)
        return np.concatenate((whole.ravel(), tail))

    # -- giving units back ---------------------------------------------------------------------

    def give(self, units: list[int]) -> None:
        """Return units; a segment they empty is released by the next release_empty."""
        if not units:
            return
        self._free += len(units)
        self._end_turn()  # a returned unit may make another segment the fullest
        per_segment = self.units_per_segment
        if len(units) == 1:  # a sliding window lets one page go per decode step
            unit = units[0]
            self._unit_free[unit] = 1
            segment_id = unit // per_segment
            self._give_to_one(segment_id, 1, unit - segment_id * per_segment)
            return
        units = np.asarray(units, dtype=np.int64)
        self._unit_free_view[units] = True
        low = int(units.min())
        segment_id = low // per_segment
        if segment_id == int(units.max()) // per_segment:  # one segment: no array per segment
            self._give_to_one(segment_id, len(units), low - segment_id * per_segment)
            return
        units.sort()  # each segment's units are a run of the sorted array
        segment_ids, starts, counts = np.unique(
            units // per_segment, return_index=True, return_counts=True
        )
        self._used[segment_ids] -= counts
        lowest = np.minimum(self._lowest[segment_ids], units[starts] - segment_ids * per_segment)
        self._lowest[segment_ids] = lowest
        used = self._used[segment_ids]
        self._file_emptied(segment_ids[used == 0])
        for segment_id in segment_ids[used > 0].tolist():
            self._push_partial(segment_id)

    def _give_to_one(self, segment_id: int, count: int, lowest: int) -> None:
        used = int(self._used[segment_id]) - count
        self._used[segment_id] = used
        if lowest < self._lowest[segment_id]:
            self._lowest[segment_id] = lowest
        if used:
            self._push_partial(segment_id)
        else:
            self._file_emptied(np.array([segment_id]))

    def _file_emptied(self, segment_ids: np.ndarray) -> None:
        """Count these segments (ascending ids) as empty; on demand, as due for release."""
        if not segment_ids.size:
            return
        self._empty_view[segment_ids] = True
        self._num_empty += len(segment_ids)
        self._lowest_empty = min(self._lowest_empty, int(segment_ids[0]))
        if not self._preallocated:
            self._maybe_empty.append(segment_ids)

    def _push_partial(self, segment_id: int) -> None:
        heap = self._partial
        heappush(heap, (-int(self._used[segment_id]), segment_id))
        if len(heap) > 2 * self._num_live + 64:
            self._rebuild_partial()

    def _rebuild_partial(self) -> None:
        """The heap without its stale entries: one entry per partial segment, sorted (a sorted
        list is a valid heap). Rebuilt only once stale entries outnumber the live segments, so
        the cost per entry pushed stays constant."""
        used = self._used
        segment_ids = np.flatnonzero((used > 0) & (used < self._capacity))
        keys = -used[segment_ids]
        order = np.lexsort((segment_ids, keys))
        self._partial = list(zip(keys[order].tolist(), segment_ids[order].tolist()))

    def release_empty(self) -> None:
        """Release the segments left with no used unit (called at the end of every operation,
        so a segment emptied by an eviction and refilled in the same operation stays put)."""
        if not self._maybe_empty:
            return
        emptied = self._maybe_empty
        # Each array is sorted and unique; together they may repeat a segment emptied twice.
        segment_ids = emptied[0] if len(emptied) == 1 else np.unique(np.concatenate(emptied))
        self._maybe_empty = []
        segment_ids = segment_ids[self._empty_view[segment_ids]]
        if not segment_ids.size:
            return
        self._empty_view[segment_ids] = False
        self._dead_view[segment_ids] = True
        self._num_empty -= len(segment_ids)
        self._num_live -= len(segment_ids)
        self._lowest_dead = min(self._lowest_dead, int(segment_ids[0]))
        released = int(self._capacity[segment_ids].sum())
        self._backed -= released
        self._free -= released
