"""The scheduler's output: one engine step, everything an executor needs to price or run it.

Per scheduled sequence: its new tokens, its context length and, for an executor that holds real
KV, its physical layout (block table). Then the step's memory operations as explicit lists, in
the order an executor applies them, and the sequences' lifecycle events (what became of
sequences since the previous batch; events of steps that ran nothing arrive with the next):
0. truncated: speculative tokens rolled back at the end of the previous step; the sequence keeps
   the KV of its first num_tokens tokens, and its last sampled token stays its next input;
1. forks: the child starts as the parent (tokens, and KV as written); preempted: freed for
   recompute, the request keeps its first kept_tokens tokens to prefill again; finished: freed
   for good (completed or rejected);
2. segments_added: new segments of the allocator;
3. block_copies, swap_out and host_copies, in the order they were decided: a swap-out's KV is
   read after the first copies_before block copies (say, a fork copied into the reservation it
   swaps out) and before the rest (which may reuse the slots it freed); block_copies are
   copy-on-write of a shared, partly written block, or a static fork's copy; host_copies move
   whole blocks between the device and the host tier of the prefix cache (an evicted entry's KV
   to the host, a host hit's KV back into fresh blocks), each after the first copies_before block
   copies and the swap-outs there, in list order;
4. segments_released: segments the allocator let go (after the reads above);
5. swap_in: host KV to write into the new slots given this step;
6. seqs: the attention work, which writes the new tokens' K/V.
Aggregates (token and context counts, the longest decode context, attention pairs, tokens swapped
or copied to and from the host tier, a draft model's work) serve a cost model. A speculative
sequence's verification is a decode of several new tokens. Under a sliding window the context
counts are the keys attention reads: a query at position p reads min(p + 1, window) keys
(attended_keys), and a prefill chunk reads from its first query's window on.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np

from allocators import BlockCopy, HostCopy


def attended_keys(context: int, window: int | None) -> int:
    """Keys the query at position context - 1 reads: the whole context, or its last window."""
    return context if window is None or context <= window else window


def attended_keys_array(contexts: np.ndarray, window: int | None) -> np.ndarray:
    """attended_keys of every element."""
    return contexts if window is None else np.minimum(contexts, window)


def attention_pairs(start: int, num_tokens: int, window: int | None) -> int:
    """Keys summed over the queries at positions start .. start + num_tokens - 1."""
    below = num_tokens if window is None else max(0, min(start + num_tokens, window) - start)
    return below * start + below * (below + 1) // 2 + (num_tokens - below) * (window or 0)


@dataclass(slots=True)
class ScheduledSeq:
    """num_new_tokens tokens whose K/V are written this step, attending to context_tokens tokens
    (the sequence's KV length once they are written). samples: the step samples the sequence's
    next token (every decode; the prefill chunk that ends a prefill). block_table: global block
    ids of the sequence after this step's allocation, for executors that ask for layouts."""

    seq_id: int
    request_id: int
    num_new_tokens: int
    context_tokens: int
    is_prefill: bool
    samples: bool
    block_table: array | None = None  # allocators.SeqLayout's: int32, read only

    @property
    def start(self) -> int:
        """Position of the first new token: the KV before it is written (or a prefix hit)."""
        return self.context_tokens - self.num_new_tokens


@dataclass(frozen=True, slots=True)
class SwapOp:
    """The KV of a sequence's tokens first_token .. num_tokens - 1 moves between device and
    host through the blocks of block_table (under a sliding window, tokens before first_token
    are never read again and do not move); a swap-out comes after the batch's first
    copies_before block copies."""

    seq_id: int
    num_tokens: int
    block_table: array  # allocators.SeqLayout's: int32, read only
    copies_before: int = 0
    first_token: int = 0


def segment_changes(before: tuple[int, ...], now: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """(segments_added, segments_released), each sorted, from the allocator's segments as the
    executor last heard of them to its segments now."""
    gone, new = set(before), set(now)
    return sorted(new - gone), sorted(gone - new)


@dataclass(frozen=True, slots=True)
class Fork:
    parent: int
    child: int


@dataclass(frozen=True, slots=True)
class Truncation:
    seq_id: int
    num_tokens: int


@dataclass(frozen=True, slots=True)
class Preemption:
    seq_id: int
    kept_tokens: int


@dataclass(slots=True)
class Batch:
    seqs: list[ScheduledSeq] = field(default_factory=list)
    truncated: list[Truncation] = field(default_factory=list)
    forks: list[Fork] = field(default_factory=list)
    preempted: list[Preemption] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    segments_added: list[int] = field(default_factory=list)
    block_copies: list[BlockCopy] = field(default_factory=list)
    swap_out: list[SwapOp] = field(default_factory=list)
    segments_released: list[int] = field(default_factory=list)
    swap_in: list[SwapOp] = field(default_factory=list)
    host_copies: list[HostCopy] = field(default_factory=list)
    prefill_tokens: int = 0
    decode_tokens: int = 0
    prefill_context_tokens: int = 0
    decode_context_tokens: int = 0
    decode_max_context: int = 0  # the longest of the contexts decode_context_tokens sums
    prefill_attention_pairs: int = 0  # sum over prefill tokens of the keys each attends to
    swap_in_tokens: int = 0
    swap_out_tokens: int = 0
    host_offload_tokens: int = 0  # copied to the prefix cache's host tier
    host_restore_tokens: int = 0  # copied back from it
    # The draft model's work before verification: draft_steps decode steps (the most drafts of a
    # sequence), draft_tokens tokens in all, each reading draft_context_tokens / draft_tokens
    # keys on average.
    draft_steps: int = 0
    draft_tokens: int = 0
    draft_context_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens

    @property
    def pcie_tokens(self) -> int:
        """Tokens of KV the step moves between the device and host memory."""
        return (self.swap_in_tokens + self.swap_out_tokens + self.host_offload_tokens
                + self.host_restore_tokens)

    @property
    def has_work(self) -> bool:
        """Whether the step computes or moves anything (else it is not run)."""
        return bool(self.seqs or self.swap_in_tokens or self.swap_out_tokens)

    def add_drafts(self, num_seqs: int, drafts: int, context: int) -> None:
        """num_seqs sequences draft `drafts` tokens each after `context` tokens."""
        self.draft_steps = max(self.draft_steps, drafts)
        self.draft_tokens += num_seqs * drafts
        self.draft_context_tokens += num_seqs * drafts * context + num_seqs * drafts * (
            drafts - 1) // 2

    def add_prefill(
        self, seq_id: int, request_id: int, start: int, num_tokens: int, *, samples: bool,
        window: int | None = None,
    ) -> None:
        """Prefill tokens [start, start + num_tokens) of a sequence."""
        context = start + num_tokens
        self.seqs.append(ScheduledSeq(seq_id, request_id, num_tokens, context, True, samples))
        self.prefill_tokens += num_tokens
        self.prefill_context_tokens += context - start - 1 + attended_keys(start + 1, window)
        self.prefill_attention_pairs += attention_pairs(start, num_tokens, window)

    def add_decode(self, seq_id: int, request_id: int, context: int,
                   window: int | None = None) -> None:
        """Decode one token of a sequence whose KV length becomes context."""
        self.seqs.append(ScheduledSeq(seq_id, request_id, 1, context, False, True))
        keys = attended_keys(context, window)
        self.decode_tokens += 1
        self.decode_context_tokens += keys
        self.decode_max_context = max(self.decode_max_context, keys)
