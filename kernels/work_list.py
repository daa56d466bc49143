"""Work lists of the balanced decode kernel (kernels/balanced_decode.py): a step's decode rows
cut into items of keys so that every program of a fixed grid gets the same share of them,
whatever the mix of context lengths. The host builds one per step (it knows every context
length when it stages a step); numpy only, so staging needs neither Triton nor torch.

The rule: the keys each row reads (all of them, or with a window its last `window`), counted
in whole tiles from the tile the first one falls in, are laid end to end; program p of the
`programs` per KV head takes tiles p * L .. (p + 1) * L - 1 of that stream, L = ceil(total
tiles / programs). An item is one row's part of one program's run: rows are cut only at tile
boundaries, a row into at most `programs` items, and there are fewer than rows + programs items
in all. That bound depends only on the row count (a CUDA graph's bucket), so the list and the
kernel's scratch have fixed shapes while their contents change with every step.

Layout, int32, WorkListPlan.size(rows) entries: rows + 1 item offsets by row (row b's items are
those from entry b on to entry b + 1), programs + 1 item offsets by program, then
max_items(rows) items of (row, first key, end key); entries past the last item are not read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# max_items is rounded up to a multiple of this: the reduce kernel, which takes it as an
# argument, is then compiled once whatever the row count (Triton specialises integers on
# divisibility by 16).
ITEMS_ALIGN = 16


def over_skew(skew: float, longest, rows, total):
    """Whether decode rows run over a work list: with skew 0 wherever there are rows, else
    where the longest context is over skew times the mean (longest x rows > skew x total),
    where one sequence would set the split-KV launch's time (it splits every sequence alike),
    and where there is one row: the split-KV launch cuts it by the block tables' width, not
    its context (a 400-token row of a llama3-8b graph in 32 splits, most of them empty: 1.7x
    the list's time, benchmarks/results/block_sizes_h200.csv), and at a width set by the
    allocator's block size (the Azure run's one-row steps were 3% slower on segmented's tables
    than on paged's). Scalars, or numpy arrays of steps (the fitted cost model's)."""
    return (rows > 0) & ((skew == 0) | (rows == 1) | (longest * rows > skew * total))


def plan_for(plan: WorkListPlan | None, context_lens: np.ndarray) -> WorkListPlan | None:
    """The plan where there is one and it applies to these decode rows, else None."""
    return plan if plan is not None and plan.applies(context_lens) else None


@dataclass(frozen=True)
class WorkListPlan:
    """How a step's decode rows become a work list: programs per KV head (the kernel's grid is
    programs x num_kv_heads), keys per tile of the kernel's launch, the model's window; and
    which steps take one (skew: see applies)."""

    programs: int
    tile_tokens: int
    window: int | None = None
    skew: float = 0.0

    def applies(self, context_lens: np.ndarray) -> bool:
        """Whether decode rows of these context lengths run over a work list (over_skew; under
        a window a row counts the keys it reads)."""
        keys = np.asarray(context_lens, dtype=np.int64)
        if self.window is not None:
            keys = np.minimum(keys, self.window)
        return bool(over_skew(self.skew, keys.max(initial=0), len(keys), keys.sum()))

    def max_items(self, rows: int) -> int:
        """A bound on the items of a list over `rows` rows."""
        return -(-(rows + self.programs) // ITEMS_ALIGN) * ITEMS_ALIGN

    def size(self, rows: int) -> int:
        """int32 entries of a list over `rows` rows."""
        return rows + self.programs + 2 + 3 * self.max_items(rows)

    def build(self, context_lens: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The work list of rows with these context lengths (0: a row that attends to nothing,
        as padding rows do), into out (int32, at least size(rows) entries) when given."""
        lens = np.asarray(context_lens, dtype=np.int64)
        rows, tile = len(lens), self.tile_tokens
        if self.window is None:  # a row of 0 keys has 0 tiles
            lo, first_tile, tiles = 0, 0, -(-lens // tile)
        else:
            lo = np.maximum(lens - self.window, 0)
            first_tile = lo // tile
            tiles = np.where(lens > 0, -(-lens // tile) - first_tile, 0)
        row_end = np.cumsum(tiles)
        row_start = row_end - tiles
        total = int(row_end[-1]) if rows else 0
        per_program = max(1, -(-total // self.programs))
        # Row starts and program starts, sorted, each once: marked on the stream (a sort and
        # a dedupe of the two lists, or np.union1d's hashing, took most of a build).
        marks = np.zeros(total, bool)
        marks[row_start[tiles > 0]] = True
        marks[::per_program] = True
        cuts = marks.nonzero()[0]
        row = np.searchsorted(row_end, cuts, side="right")
        tile_of = (first_tile - row_start)[row]  # stream position + this = the row's tile
        start = (cuts + tile_of) * tile
        if self.window is not None:
            start = np.maximum(start, lo[row])
        end = np.minimum((np.append(cuts[1:], total) + tile_of) * tile, lens[row])

        data = np.empty(self.size(rows), np.int32) if out is None else out[: self.size(rows)]
        data[: rows + 1] = np.searchsorted(row, np.arange(rows + 1))
        at = rows + 1
        data[at : at + self.programs + 1] = np.searchsorted(cuts // per_program,
                                                          np.arange(self.programs + 1))
        items = data[at + self.programs + 1 :].reshape(-1, 3)
        items[: len(cuts), 0], items[: len(cuts), 1], items[: len(cuts), 2] = row, start, end
        return data


@dataclass(frozen=True)
class DecodeWorkList:
    """A work list on the device: plan.build's entries for `rows` rows, int32 [plan.size(rows)]
    (a slice of a fixed staging buffer under a CUDA graph)."""

    plan: WorkListPlan
    rows: int
    data: torch.Tensor

    @property
    def max_items(self) -> int:
        return self.plan.max_items(self.rows)
