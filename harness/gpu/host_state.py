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

    def length(self, seq_id: int) -> int:
        return self._len[seq_id]

    def ids(self, seq_id: int) -> np.ndarray:
        """A view of the sequence's token ids (valid until the next append)."""
        return self._ids[seq_id][: self._len[seq_id]]

    def last(self, seq_ids: list[int]) -> np.ndarray:
        """int64 [len(seq_ids)]: each sequence's last token id."""
        ids, lens = self._ids, self._len
        return np.array([ids[sid].item(lens[sid] - 1) for sid in seq_ids], np.int64)

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
    copy-on-write replaces the last one, truncation drops from the end. A table is therefore
    rewritten from the last entry it had, and one of the same length and last entry as before
    is left as it is. (A slide also sets entries at the front to NO_BLOCK; the row keeps the
    ids those entries had, which no kernel reads: they lie before every window.) A sequence
    whose KV is freed (finished, preempted for recompute, swapped out) is dropped, so its next
    table is written whole.
    """

    def __init__(self, rows: int = 64, width: int = 64) -> None:
        self._rows = np.zeros((rows, round_width(width)), dtype=np.int32)
        self._lengths = [0] * rows  # entries of each row's table
        self._row_of: dict[int, int] = {}
        self._free: list[int] = list(range(rows - 1, -1, -1))
        self._written: list[np.ndarray] = []  # flat indices into the array since take_changes
        self._regrown = True  # the array is new since take_changes: all of it changed

    @property
    def array(self) -> np.ndarray:
        """[rows, width] int32: row r holds the table of the sequence given row r (valid until
        the next update)."""
        return self._rows

    def update(self, seq_ids: list[int], tables: list[tuple[int, ...]]) -> list[int]:
        """The rows of the (distinct) sequences, holding their current block tables."""
        widest = max(map(len, tables), default=0)
        if widest > self._rows.shape[1]:
            self._grow(width=2 * widest)
        width = self._rows.shape[1]
        # entry() reads the array as it is now: taking a row below may grow it (never its
        # width), but every row read was taken before.
        entry = self._rows.item
        row_of, lengths = self._row_of, self._lengths
        rows, starts, ends, values = [], [], [], []
        for sid, table in zip(seq_ids, tables):
            row = row_of.get(sid)
            n = len(table)
            if row is None:
                row = row_of[sid] = self._take_row()
                keep = 0
            else:  # kept: the entries before the last one seen, and that one if unchanged
                seen = lengths[row]
                if 0 < seen <= n and entry(row, seen - 1) == table[seen - 1]:
                    keep = seen
                else:
                    keep = max(min(seen, n) - 1, 0)
            rows.append(row)
            lengths[row] = n
            if keep < n:
                base = row * width
                starts.append(base + keep)
                ends.append(base + n)
                values.extend(table[keep:])
        if starts:
            flat = ragged_arange(np.array(starts), np.array(ends))
            self._rows.reshape(-1)[flat] = values
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
        self._lengths += [0] * (new.shape[0] - old.shape[0])
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
