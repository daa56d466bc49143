"""What the GPU executor keeps of each sequence on the host, in arrays a step can gather at once.

Token ids: one growable int64 array per sequence (the prompt, then the greedy samples), so a
prefill chunk is a view and a decode input a single read. Block tables: one row per sequence
holding KV in a shared int32 array, updated only where the allocator's table changed; the
entries written are logged, so that the copy on the device (harness/gpu/device_tables.py)
follows by those entries alone rather than by the whole tables of every step.
"""
from __future__ import annotations

import numpy as np

TABLE_WIDTH_MULTIPLE = 16  # one kernel specialisation for the row stride (Triton: 16 | stride)


class TokenStore:
    """Each sequence's token ids; capacity grows by doubling."""

    def __init__(self) -> None:
        self._ids: dict[int, np.ndarray] = {}
        self._len: dict[int, int] = {}

    def __contains__(self, seq_id: int) -> bool:
        return seq_id in self._ids

    def start(self, seq_id: int, prompt: np.ndarray, capacity: int) -> None:
        ids = np.zeros(max(capacity, len(prompt), 1), dtype=np.int64)
        ids[: len(prompt)] = prompt
        self._ids[seq_id], self._len[seq_id] = ids, len(prompt)

    def fork(self, parent: int, child: int) -> None:
        self._ids[child] = self._ids[parent].copy()
        self._len[child] = self._len[parent]

    def truncate(self, seq_id: int, length: int) -> None:
        self._len[seq_id] = min(self._len[seq_id], length)

    def roll_back(self, seq_id: int, kept: int) -> None:
        """Speculative tokens rejected: keep the first kept tokens and the last sampled token
        (the verification's own next token, the next input)."""
        ids, length = self._ids[seq_id], self._len[seq_id]
        ids[kept] = ids[length - 1]
        self._len[seq_id] = kept + 1

    def length(self, seq_id: int) -> int:
        return self._len[seq_id]

    def ids(self, seq_id: int) -> np.ndarray:
        """A view of the sequence's token ids (valid until the next append)."""
        return self._ids[seq_id][: self._len[seq_id]]

    def last(self, seq_id: int) -> int:
        return int(self._ids[seq_id][self._len[seq_id] - 1])

    def append(self, seq_ids: list[int], tokens: list[int]) -> None:
        ids, lens = self._ids, self._len
        for sid, token in zip(seq_ids, tokens):
            n = lens[sid]
            buf = ids[sid]
            if n == len(buf):
                buf = ids[sid] = np.concatenate([buf, np.zeros_like(buf)])
            buf[n] = token
            lens[sid] = n + 1

    def seq_ids(self) -> list[int]:
        return list(self._ids)


class TableRows:
    """The block tables of the sequences holding KV, one row each of one int32 array.

    The allocator changes a live sequence's table only at its tail: extending appends blocks,
    copy-on-write replaces the last one, truncation drops from the end. A table new since the
    last step is therefore rewritten from the last entry seen; a table that is the very object
    seen last costs nothing. (A slide also sets entries at the front to NO_BLOCK; the row keeps
    the ids those entries had, which no kernel reads: they lie before every window.) A sequence
    whose KV is freed (finished, preempted for recompute, swapped out) is dropped, so its next
    table is written whole.
    """

    def __init__(self, rows: int = 64, width: int = 64) -> None:
        self._rows = np.zeros((rows, round_width(width)), dtype=np.int32)
        self._row_of: dict[int, int] = {}
        self._seen: dict[int, tuple[int, ...]] = {}
        self._free: list[int] = list(range(rows - 1, -1, -1))
        self._written: list[tuple[int, int, int]] = []  # (row, start, end) since take_changes
        self._regrown = True  # the array is new since take_changes: all of it changed

    @property
    def array(self) -> np.ndarray:
        """[rows, width] int32: row r holds the table of the sequence given row r (valid until
        the next update)."""
        return self._rows

    def update(self, seq_id: int, table: tuple[int, ...]) -> int:
        """The row of a sequence, holding its current block table."""
        seen = self._seen.get(seq_id)
        row = self._row_of.get(seq_id)
        if seen is table:
            return row
        if row is None:
            row = self._row_of[seq_id] = self._take_row()
            keep = 0
        else:
            keep = max(min(len(seen), len(table)) - 1, 0)
        if len(table) > self._rows.shape[1]:
            self._grow(width=2 * len(table))
        self._rows[row, keep : len(table)] = table[keep:]
        self._written.append((row, keep, len(table)))
        self._seen[seq_id] = table
        return row

    def take_changes(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Flat indices into `array` (int64) and values (int32) of the entries written since
        the last call, or None when the array was reallocated since (everything is new)."""
        written, self._written = self._written, []
        if self._regrown:
            self._regrown = False
            return None
        if not written:
            return np.zeros(0, np.int64), np.zeros(0, np.int32)
        rows, starts, ends = np.array(written, dtype=np.int64).T
        first = rows * self._rows.shape[1]
        flat = ragged_arange(first + starts, first + ends)
        return flat, self._rows.reshape(-1)[flat]

    def truncate(self, seq_id: int, num_blocks: int) -> None:
        """The sequence was cut to num_blocks blocks: its next table is rewritten from its last
        kept block (a rollback gives back the blocks past it and may copy that one; a table
        that shrank and grew again between two steps differs from the last one seen there)."""
        seen = self._seen.get(seq_id)
        if seen is not None:
            self._seen[seq_id] = seen[:num_blocks]

    def drop(self, seq_id: int) -> None:
        row = self._row_of.pop(seq_id, None)
        self._seen.pop(seq_id, None)
        if row is not None:
            self._free.append(row)

    def _take_row(self) -> int:
        if not self._free:
            self._grow(rows=2 * self._rows.shape[0])
        return self._free.pop()

    def _grow(self, *, rows: int = 0, width: int = 0) -> None:
        old = self._rows
        new = np.zeros((max(rows, old.shape[0]), max(round_width(width), old.shape[1])), np.int32)
        new[: old.shape[0], : old.shape[1]] = old
        self._free.extend(range(new.shape[0] - 1, old.shape[0] - 1, -1))
        self._rows = new
        self._regrown = True


def ragged_arange(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) without the loop."""
    lengths = ends - starts
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def round_width(width: int, multiple: int = TABLE_WIDTH_MULTIPLE) -> int:
    """width rounded up to a multiple (at least one multiple)."""
    width = max(width, 1)
    return -(-width // multiple) * multiple
