"""Static allocation: one preallocated arena, one contiguous reservation per request.

This is the pre-paging baseline (FasterTransformer, early HF serving): a request reserves its
whole maximum length up front (max_model_len, which a run sets to the model's context) as one
aligned range of the arena. The oracle variant reserves prompt + the request's actual output,
which no engine knows before decoding ends: it is the best a preallocating engine could do, kept
to bound the baseline, never as the baseline. Free ranges are kept sorted and merged with their neighbours,
so holes left by finished requests are real and external fragmentation can be measured. A
reservation is one range to its end, so a sliding window releases none of it: the tokens the
window has passed stay held, as stale.
"""
from __future__ import annotations

from array import array
from bisect import bisect_left, insort
from dataclasses import dataclass
from typing import Sequence

from allocators.base import (
    Allocator, BlockCopy, OutOfKVMemory, SeqLayout, Usage, check_slide, split_allocated,
)
from allocators.spec import AllocatorSpec, Capacity, Param

FITS = ("first", "best")
DEFAULT_ALIGN_TOKENS = 16


@dataclass(slots=True)
class _Reservation:
    start_block: int  # first block of the range
    num_blocks: int
    length: int  # tokens written
    final_tokens: int | None
    start: int = 0  # the window start: tokens before it are stale
    layout: SeqLayout | None = None  # built at the first layout() call: the blocks never change


class StaticAllocator(Allocator):
    """Contiguous per-request reservations, first-fit or best-fit, no prefix sharing.

    Units are blocks of align_tokens slots; the arena is one segment holding every block, so a
    reservation's block table is a run of consecutive block ids.
    """

    def __init__(
        self,
        budget_slots: int,
        *,
        max_model_len: int | None = None,
        fit: str = FITS[0],
        align_tokens: int = DEFAULT_ALIGN_TOKENS,
        oracle: bool = False,
    ) -> None:
        if budget_slots < 0:
            raise ValueError(f"budget_slots must be >= 0, got {budget_slots}")
        if align_tokens < 1:
            raise ValueError(f"align_tokens must be >= 1, got {align_tokens}")
        if fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
        if max_model_len is not None and max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {max_model_len}")
        self._budget = budget_slots
        self._align = align_tokens
        self._fit = fit
        self._max_model_len = max_model_len
        self._oracle = oracle
        self._arena_blocks = budget_slots // align_tokens
        # Free ranges in blocks: sorted starts, start -> size, end -> start (to find the left
        # neighbour when merging), and the sorted multiset of sizes (largest run in O(1)).
        self._free_starts: list[int] = []
        self._free_size: dict[int, int] = {}
        self._free_end: dict[int, int] = {}
        self._run_sizes: list[int] = []
        self._free_blocks = 0
        self._seqs: dict[int, _Reservation] = {}
        self._block_copies: list[BlockCopy] = []
        # Running totals so usage() stays O(1) however many sequences run.
        self._live = 0  # written tokens, stale ones included
        self._stale = 0
        self._reserved = 0
        self._internal = 0
        if self._arena_blocks:
            self._release(0, self._arena_blocks)

    @property
    def block_size(self) -> int:
        return self._align

    @property
    def blocks_per_segment(self) -> int:
        return self._arena_blocks  # the arena is the one segment

    def allocate(
        self,
        seq_id: int,
        num_tokens: int,
        *,
        final_tokens: int | None = None,
        prefix_hashes: Sequence[int] | None = None,
        chunk_tokens: int = 0,
        prompt_tokens: int | None = None,
        pending: bool = False,
    ) -> int:
        if seq_id in self._seqs:
            raise ValueError(f"seq_id {seq_id} is already allocated")
        num_blocks = self._blocks_for(num_tokens, final_tokens)
        start = self._take(num_blocks)
        seq = _Reservation(start, num_blocks, num_tokens, final_tokens)
        self._seqs[seq_id] = seq
        self._account(seq, +1)
        return 0  # static engines keep no prefix cache

    def cached_prefix_tokens(self, prefix_hashes: Sequence[int] | None, chunk_tokens: int) -> int:
        return 0

    def can_allocate(self, num_tokens: int, *, final_tokens: int | None = None) -> bool:
        if self._max_model_len is not None and num_tokens > self._max_model_len:
            return False
        return self._blocks_for(num_tokens, final_tokens) <= self._largest_run()

    def extend(self, seq_id: int, num_tokens: int = 1) -> None:
        seq = self._get(seq_id)
        if num_tokens < 0:
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
        capacity = seq.num_blocks * self._align
        if seq.length + num_tokens > capacity:
            raise OutOfKVMemory(
                f"seq {seq_id}: {seq.length} + {num_tokens} tokens exceed its static "
                f"reservation of {capacity} slots"
            )
        reserved, internal = split_allocated(capacity, seq.length, seq.final_tokens)
        seq.length += num_tokens
        now_reserved, now_internal = split_allocated(capacity, seq.length, seq.final_tokens)
        self._live += num_tokens
        self._reserved += now_reserved - reserved
        self._internal += now_internal - internal

    def fork(self, parent_id: int, child_id: int) -> None:
        parent = self._get(parent_id)
        if child_id in self._seqs:
            raise ValueError(f"seq_id {child_id} is already allocated")
        # A static engine cannot share: the child copies the parent into its own reservation,
        # from the block where the parent's window starts (what comes before is never read).
        start = self._take(parent.num_blocks)
        child = _Reservation(start, parent.num_blocks, parent.length, parent.final_tokens,
                             parent.start)
        self._seqs[child_id] = child
        self._account(child, +1)
        align = self._align
        for i in range(parent.start // align, -(-parent.length // align)):
            tokens = min(align, parent.length - i * align)
            self._block_copies.append(BlockCopy(parent.start_block + i, start + i, tokens))

    def truncate(self, seq_id: int, num_tokens: int) -> None:
        seq = self._get(seq_id)
        if not max(1, seq.start) <= num_tokens <= seq.length:
            raise ValueError(f"seq {seq_id}: cannot keep {num_tokens} of its {seq.length} tokens "
                             f"(its window starts at {seq.start})")
        # The reservation stays whole: the cut slots are reserved again for the tokens to come.
        self._account(seq, -1)
        seq.length = num_tokens
        self._account(seq, +1)

    def slide(self, seq_id: int, start: int) -> None:
        seq = self._get(seq_id)
        check_slide(seq_id, seq.start, start, seq.length)
        self._stale += start - seq.start
        seq.start = start

    def free(self, seq_id: int) -> None:
        seq = self._get(seq_id)
        del self._seqs[seq_id]
        self._account(seq, -1)
        self._release(seq.start_block, seq.num_blocks)

    def layout(self, seq_id: int) -> SeqLayout:
        """The reservation's run of blocks, the same object on every call for the same
        reservation: the scheduler asks for it every step the sequence runs."""
        seq = self._get(seq_id)
        if seq.layout is None:
            first = seq.start_block
            seq.layout = SeqLayout(self._align, self._arena_blocks,
                                   array("i", range(first, first + seq.num_blocks)))
        return seq.layout

    def length(self, seq_id: int) -> int:
        return self._get(seq_id).length

    def usage(self) -> Usage:
        live = self._live - self._stale
        return Usage(
            budget=self._budget,
            backed=self._arena_blocks * self._align,
            live=live,
            logical=live,  # nothing is shared
            reserved=self._reserved,
            internal=self._internal,
            cached=0,
            free=self._free_blocks * self._align,
            largest_free_run=self._largest_run() * self._align,
            stale=self._stale,
        )

    def segments(self) -> tuple[int, ...]:
        return (0,) if self._arena_blocks else ()

    def _get(self, seq_id: int) -> _Reservation:
        try:
            return self._seqs[seq_id]
        except KeyError:
            raise ValueError(f"unknown seq_id {seq_id}") from None

    def _blocks_for(self, num_tokens: int, final_tokens: int | None) -> int:
        """Blocks of the reservation a new request of num_tokens (reaching final_tokens) needs."""
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        if final_tokens is not None and final_tokens < num_tokens:
            raise ValueError(f"final_tokens {final_tokens} < num_tokens {num_tokens}")
        if self._max_model_len is not None and num_tokens > self._max_model_len:
            raise ValueError(f"num_tokens {num_tokens} > max_model_len {self._max_model_len}")
        if self._max_model_len is not None and not self._oracle:
            tokens = self._max_model_len
        else:  # the oracle, or no limit given: what the caller says the request reaches
            tokens = final_tokens if final_tokens is not None else num_tokens
        return -(-tokens // self._align)

    def _largest_run(self) -> int:
        return self._run_sizes[-1] if self._run_sizes else 0

    def _account(self, seq: _Reservation, sign: int) -> None:
        reserved, internal = split_allocated(
            seq.num_blocks * self._align, seq.length, seq.final_tokens
        )
        self._live += sign * seq.length
        self._stale += sign * seq.start
        self._reserved += sign * reserved
        self._internal += sign * internal

    def _take(self, num_blocks: int) -> int:
        """Cut num_blocks from a free range chosen by the fit policy; return its first block."""
        if num_blocks > self._largest_run():
            raise OutOfKVMemory(
                f"need {num_blocks * self._align} contiguous slots; largest free run is "
                f"{self._largest_run() * self._align} of {self._free_blocks * self._align} free"
            )
        index = self._first_fit(num_blocks) if self._fit == "first" else self._best_fit(num_blocks)
        start = self._free_starts[index]
        size = self._free_size.pop(start)
        del self._free_end[start + size]
        self._remove_run(size)
        if size > num_blocks:
            # The remainder keeps the hole's place in the sorted start list.
            rest = start + num_blocks
            self._free_starts[index] = rest
            self._free_size[rest] = size - num_blocks
            self._free_end[start + size] = rest
            insort(self._run_sizes, size - num_blocks)
        else:
            del self._free_starts[index]
        self._free_blocks -= num_blocks
        return start

    def _first_fit(self, num_blocks: int) -> int:
        sizes = self._free_size
        return next(i for i, start in enumerate(self._free_starts) if sizes[start] >= num_blocks)

    def _best_fit(self, num_blocks: int) -> int:
        best_index, best_size = -1, 0
        for i, start in enumerate(self._free_starts):
            size = self._free_size[start]
            if size >= num_blocks and (best_index < 0 or size < best_size):
                best_index, best_size = i, size
                if size == num_blocks:
                    break
        return best_index

    def _release(self, start: int, size: int) -> None:
        """Return blocks [start, start + size) to the free list, merged with adjacent ranges."""
        self._free_blocks += size
        end = start + size
        index = bisect_left(self._free_starts, start)
        right_size = self._free_size.pop(end, None)
        if right_size is not None:
            del self._free_end[end + right_size]
            del self._free_starts[index]
            self._remove_run(right_size)
            end += right_size
        left = self._free_end.pop(start, None)
        if left is not None:
            self._remove_run(self._free_size[left])
            start = left
        else:
            self._free_starts.insert(index, start)
        self._free_size[start] = end - start
        self._free_end[end] = start
        insort(self._run_sizes, end - start)

    def _remove_run(self, size: int) -> None:
        del self._run_sizes[bisect_left(self._run_sizes, size)]


def capacity(budget_slots: int, context: int, params) -> Capacity:
    """Every request reserves max_model_len (the oracle, or no limit: its context) in aligned
    units of one arena."""
    align = params["align_tokens"]
    reserved = context if params["oracle"] else (params["max_model_len"] or context)
    per_seq = -(-reserved // align) * align
    arena = budget_slots // align * align
    return Capacity(per_seq, arena // per_seq, arena)


SPEC = AllocatorSpec(
    name="static",
    cls=StaticAllocator,
    params=(
        Param("max_model_len", int, None, "tokens every request reserves; none: the run's "
              "max_model_len (the model's context)", min=1, optional=True, label="max_len"),
        Param("fit", str, FITS[0], "which free range a reservation takes", choices=FITS),
        Param("align_tokens", int, DEFAULT_ALIGN_TOKENS, "reservations are whole units of this "
              "many slots", min=1, label="align"),
        Param("oracle", bool, False, "reserve prompt + the request's actual output (known to "
              "no real engine): a bound on the baseline", label="oracle"),
    ),
    grain="align_tokens",
    needs_contiguity=True,
    capacity_formula=capacity,
    cost_hint=0.4,
    max_len_param="max_model_len",
    oracle_param="oracle",
)
