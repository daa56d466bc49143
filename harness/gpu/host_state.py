"""What the GPU executor keeps of each sequence on the host, in arrays a step can gather at once.

Token ids: one arena of int64 holding each sequence's ids (the prompt, then the greedy samples)
in a range of its own, found through arrays indexed by seq id, so that a step reads the last
token of all its sequences, or appends a token to each, in a few numpy operations, and a prefill
chunk is a view. Block tables: one row per sequence holding KV in a shared int32 array, updated
only where the allocator's table changed; the entries written are logged, so that the copy on
the device (harness/gpu/device_tables.py) follows by those entries alone rather than by the
whole tables of every step. Seq ids are the engine's: small non-negative integers.
"""
from __future__ import annotations

from itertools import repeat
from operator import getitem
from typing import Sequence

import numpy as np

TABLE_WIDTH_MULTIPLE = 16  # one kernel specialisation for the row stride (Triton: 16 | stride)


class TokenStore:
    """Each sequence's token ids: sequence s holds arena[start[s] : end[s]], with room up to
    limit[s]. A sequence outgrowing its range moves to the arena's end with twice the room; the
    arena, made for `tokens` ids, grows by doubling (a copy of it all)."""

    def __init__(self, tokens: int = 1024) -> None:
        self._arena = np.zeros(max(tokens, 1), np.int64)
        self._used = 0  # arena entries given out
        self._start = np.zeros(0, np.int64)
        self._end = np.zeros(0, np.int64)
        self._limit = np.zeros(0, np.int64)
        self._seqs: dict[int, None] = {}  # the sequences started, in order

    def __contains__(self, seq_id: int) -> bool:
        return seq_id in self._seqs

    def start(self, seq_id: int, prompt: np.ndarray, capacity: int) -> None:
        self._add(seq_id)
        self._place(seq_id, prompt, max(capacity, len(prompt), 1))

    def fork(self, parent: int, child: int) -> None:
        self._add(child)
        self._place(child, self.ids(parent), int(self._limit[parent] - self._start[parent]))

    def truncate(self, seq_id: int, length: int) -> None:
        self._end[seq_id] = min(self._end[seq_id], self._start[seq_id] + length)

    def length(self, seq_id: int) -> int:
        return int(self._end[seq_id] - self._start[seq_id])

    def lengths(self, seq_ids) -> np.ndarray:
        """int64 [len(seq_ids)]: each sequence's token count."""
        return self._end[seq_ids] - self._start[seq_ids]

    def ids(self, seq_id: int) -> np.ndarray:
        """A view of the sequence's token ids (valid until the next append)."""
        return self._arena[self._start[seq_id] : self._end[seq_id]]

    def last(self, seq_ids) -> np.ndarray:
        """int64 [len(seq_ids)]: each sequence's last token id."""
        return self._arena[self._end[seq_ids] - 1]

    def append(self, seq_ids, tokens) -> None:
        """Append tokens[i] to sequence seq_ids[i] (distinct sequences)."""
        at = self._end[seq_ids]
        full = at == self._limit[seq_ids]
        if np.count_nonzero(full):
            for sid in np.asarray(seq_ids)[full].tolist():
                self._place(sid, self.ids(sid), 2 * self.length(sid))
            at = self._end[seq_ids]
        self._arena[at] = tokens
        self._end[seq_ids] = at + 1

    def extend(self, seq_id: int, tokens: np.ndarray) -> None:
        """Append tokens to one sequence."""
        length = self.length(seq_id) + len(tokens)
        if self._start[seq_id] + length > self._limit[seq_id]:
            self._place(seq_id, self.ids(seq_id), 2 * length)
        end = self._end[seq_id]
        self._arena[end : end + len(tokens)] = tokens
        self._end[seq_id] = end + len(tokens)

    def seq_ids(self) -> list[int]:
        return list(self._seqs)

    def _add(self, seq_id: int) -> None:
        if seq_id >= len(self._start):
            grow = max(2 * len(self._start), seq_id + 1) - len(self._start)
            self._start, self._end, self._limit = (
                np.concatenate([a, np.zeros(grow, np.int64)])
                for a in (self._start, self._end, self._limit))
        self._seqs[seq_id] = None

    def _place(self, seq_id: int, ids: np.ndarray, capacity: int) -> None:
        """Give the sequence a range of `capacity` entries at the arena's end, holding ids."""
        at = self._used
        if at + capacity > len(self._arena):
            arena = np.zeros(max(2 * len(self._arena), at + capacity), np.int64)
            arena[:at] = self._arena[:at]
            self._arena = arena
        self._arena[at : at + len(ids)] = ids
        self._used = at + capacity
        self._start[seq_id], self._end[seq_id], self._limit[seq_id] = (
            at, at + len(ids), at + capacity)


class TableRows:
    """The block tables of the sequences holding KV, one row each of one int32 array.

    The allocator changes a live sequence's table only at its tail: extending appends blocks,
    copy-on-write replaces the last one, truncation drops from the end. A table is therefore
    rewritten from the last entry it had, and one of the same length and last entry as before
    is left as it is. (A slide also sets entries at the front to NO_BLOCK; the row keeps the
    ids those entries had, which no kernel reads: they lie before every window.) A sequence
    whose KV is freed (finished, preempted for recompute, swapped out) is dropped, so its next
    table is written whole.
    """

    def __init__(self, rows: int = 64, width: int = 64) -> None:
        self._rows = np.zeros((rows, round_width(width)), dtype=np.int32)
        self._lengths = np.zeros(rows, np.int64)  # entries of each row's table
        self._row_of: dict[int, int] = {}
        self._free: list[int] = list(range(rows - 1, -1, -1))
        self._written: list[np.ndarray] = []  # flat indices into the array since take_changes
        self._regrown = True  # the array is new since take_changes: all of it changed

    @property
    def array(self) -> np.ndarray:
        """[rows, width] int32: row r holds the table of the sequence given row r (valid until
        the next update)."""
        return self._rows

    def update(self, seq_ids: Sequence[int], tables: Sequence[Sequence[int]]) -> np.ndarray:
        """int64: the rows of the (distinct) sequences, holding their current block tables
        (none empty): allocators.SeqLayout's int32 arrays, which numpy reads without a copy
        (any sequence of ints works, slower)."""
        n = np.fromiter(map(len, tables), np.int64, len(tables))
        if len(n) and n.max() > self._rows.shape[1]:
            self._grow(width=2 * int(n.max()))
        rows = self._take_rows(seq_ids)
        # Kept: the entries before the last one seen, and that one if unchanged (a new row has
        # seen none: its table is written whole).
        keep = np.minimum(self._lengths[rows], n) - 1
        now = np.fromiter(map(getitem, tables, keep.tolist()), np.int64, len(tables))
        keep += now == self._rows[rows, keep]
        np.maximum(keep, 0, out=keep)
        self._lengths[rows] = n
        width, flat_rows = self._rows.shape[1], self._rows.reshape(-1)
        count = n - keep
        # Most rows that change gain one entry (a decode step): those are written from each
        # table's last entry alone, the rest from slices.
        last = (count == 1).nonzero()[0]
        if len(last):
            flat = rows[last] * width + keep[last]
            grown = tables if len(last) == len(tables) else map(tables.__getitem__, last.tolist())
            flat_rows[flat] = np.fromiter(map(getitem, grown, repeat(-1)), np.int32, len(last))
            self._written.append(flat)
        many = (count > 1).nonzero()[0]
        if len(many):
            base = rows[many] * width
            flat = ragged_arange(base + keep[many], base + n[many])
            flat_rows[flat] = np.concatenate([
                np.asarray(tables[i], np.int32)[k:end] for i, k, end in
                zip(many.tolist(), keep[many].tolist(), n[many].tolist())])
            self._written.append(flat)
        return rows

    def take_changes(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Flat indices into `array` (int64) and values (int32) of the entries written since
        the last call, or None when the array was reallocated since (everything is new)."""
        written, self._written = self._written, []
        if self._regrown:
            self._regrown = False
            return None
        flat = np.concatenate(written) if written else np.zeros(0, np.int64)
        return flat, self._rows.reshape(-1)[flat]

    def truncate(self, seq_id: int, num_blocks: int) -> None:
        """The sequence was cut to num_blocks blocks: its next table is rewritten from its last
        kept block (a rollback gives back the blocks past it and may copy that one; a table
        that shrank and grew again between two steps differs from the last one seen there)."""
        row = self._row_of.get(seq_id)
        if row is not None:
            self._lengths[row] = min(self._lengths[row], num_blocks)

    def drop(self, seq_id: int) -> None:
        row = self._row_of.pop(seq_id, None)
        if row is not None:
            self._lengths[row] = 0
            self._free.append(row)

    def _take_rows(self, seq_ids: Sequence[int]) -> np.ndarray:
        """The rows of the sequences, new ones taken from the free rows (seen length 0)."""
        rows = np.fromiter(map(self._row_of.get, seq_ids, repeat(-1)), np.int64, len(seq_ids))
        for i in (rows < 0).nonzero()[0].tolist():
            if not self._free:
                self._grow(rows=2 * self._rows.shape[0])
            rows[i] = self._row_of[seq_ids[i]] = self._free.pop()
        return rows

    def _grow(self, *, rows: int = 0, width: int = 0) -> None:
        old = self._rows
        new = np.zeros((max(rows, old.shape[0]), max(round_width(width), old.shape[1])), np.int32)
        new[: old.shape[0], : old.shape[1]] = old
        self._free.extend(range(new.shape[0] - 1, old.shape[0] - 1, -1))
        self._rows = new
        self._lengths = np.concatenate(
            [self._lengths, np.zeros(new.shape[0] - old.shape[0], np.int64)])
        self._regrown = True


def ragged_arange(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) without the loop."""
    lengths = ends - starts
    offsets = lengths.cumsum() - lengths
    return (starts - offsets).repeat(lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def round_width(width: int, multiple: int = TABLE_WIDTH_MULTIPLE) -> int:
    """width rounded up to a multiple (at least one multiple)."""
    width = max(width, 1)
    return -(-width // multiple) * multiple
