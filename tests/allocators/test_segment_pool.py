"""SegmentPool: which units and segments it hands out, against a model that scans every segment.

The model states the policy in the plainest way (each time a unit is needed: the fullest live
segment with a free unit, lowest id on ties, else the lowest dead segment id; lowest free offset
inside it). The pool must pick exactly the same units, since run results depend on them.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from allocators.segment_pool import SegmentPool


class ScanningPool:
    """The reference: a set of used offsets per live segment, scanned on every unit taken."""

    def __init__(self, total_units: int, units_per_segment: int, *, preallocated: bool) -> None:
        self.total = total_units
        self.per_segment = units_per_segment
        self.preallocated = preallocated
        count = -(-total_units // units_per_segment)
        self.used: dict[int, set[int]] = {s: set() for s in range(count)} if preallocated else {}
        self.dead = [] if preallocated else list(range(count))

    def capacity(self, segment: int) -> int:
        return min(self.per_segment, self.total - segment * self.per_segment)

    def take(self, count: int) -> list[int]:
        return [self._take_one() for _ in range(count)]

    def _take_one(self) -> int:
        open_segments = [s for s, used in self.used.items() if len(used) < self.capacity(s)]
        if open_segments:
            segment = max(open_segments, key=lambda s: (len(self.used[s]), -s))
        else:
            segment = min(self.dead)
            self.dead.remove(segment)
            self.used[segment] = set()
        offset = min(set(range(self.capacity(segment))) - self.used[segment])
        self.used[segment].add(offset)
        return segment * self.per_segment + offset

    def give(self, units: list[int]) -> None:
        for unit in units:
            self.used[unit // self.per_segment].remove(unit % self.per_segment)

    def release_empty(self) -> None:
        if self.preallocated:
            return
        for segment in [s for s, used in self.used.items() if not used]:
            del self.used[segment]
            self.dead.append(segment)

    def figures(self) -> tuple:
        backed = sum(self.capacity(s) for s in self.used)
        free = backed - sum(len(used) for used in self.used.values())
        return tuple(sorted(self.used)), backed, free, self.total - backed


def figures(pool: SegmentPool) -> tuple:
    return pool.segments(), pool.backed, pool.free, pool.unbacked


def check_heap_bound(pool: SegmentPool) -> None:
    """Stale heap entries are dropped before they outnumber the live segments."""
    assert len(pool._partial) <= 2 * pool._num_live + 64


def replay(pool: SegmentPool, model: ScanningPool, ops, rng: random.Random) -> None:
    """Apply (kind, count) operations to both; a give returns count held units at random."""
    held: list[int] = []
    for kind, amount in ops:
        if kind == "take":
            count = min(amount, pool.free + pool.unbacked)
            units = pool.take(count)
            assert units == model.take(count)
            held.extend(units)
        else:
            rng.shuffle(held)
            returned, held = held[:amount], held[amount:]
            pool.give(returned)
            model.give(returned)
        if rng.random() < 0.7:  # sometimes a give and a take land in one operation
            pool.release_empty()
            model.release_empty()
        assert figures(pool) == model.figures()
        check_heap_bound(pool)


OPS = st.lists(st.tuples(st.sampled_from(["take", "give"]), st.integers(0, 40)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    total=st.integers(0, 120),
    per_segment=st.integers(1, 20),
    preallocated=st.booleans(),
    ops=OPS,
    seed=st.integers(0, 2**16),
)
def test_picks_match_a_pool_that_scans_every_segment(total, per_segment, preallocated, ops, seed):
    pool = SegmentPool(total, per_segment, preallocated=preallocated)
    model = ScanningPool(total, per_segment, preallocated=preallocated)
    replay(pool, model, ops, random.Random(seed))


@pytest.mark.parametrize("per_segment", [1, 3, 16])
def test_long_churn_keeps_picks(per_segment):
    rng = random.Random(per_segment)
    ops = [("take", rng.randint(1, 12)) if rng.random() < 0.55 else ("give", rng.randint(1, 8))
           for _ in range(3000)]
    pool = SegmentPool(256, per_segment, preallocated=False)
    replay(pool, ScanningPool(256, per_segment, preallocated=False), ops, rng)


@pytest.mark.parametrize("per_segment", [16, 64])
def test_stale_heap_entries_are_dropped_and_picks_kept(per_segment, monkeypatch):
    """One-unit gives into a full pool push an entry each, and each one after the first into a
    segment leaves a stale one behind: the heap is rebuilt before it outgrows its bound."""
    rebuilds = []
    rebuild = SegmentPool._rebuild_partial
    monkeypatch.setattr(SegmentPool, "_rebuild_partial",
                        lambda pool: rebuilds.append(1) or rebuild(pool))
    ops = ([("take", 256)] + [("give", 1)] * 200) * 8
    pool = SegmentPool(256, per_segment, preallocated=False)
    replay(pool, ScanningPool(256, per_segment, preallocated=False), ops, random.Random(0))
    assert rebuilds


def test_a_take_the_pool_cannot_fill_is_an_error():
    pool = SegmentPool(10, 4, preallocated=False)
    with pytest.raises(ValueError, match="only 10 units"):
        pool.take(11)
