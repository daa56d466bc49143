"""The allocator contract: one error type, one usage snapshot, one layout view, one interface.

Every allocator manages KV *slots* (one slot = the K and V of one token in every layer) inside
*segments* (contiguous physical ranges). Allocators are pure Python and know nothing of torch.
The figures of `Usage` are defined here once and shared by every allocator and every report.

A sliding attention window (Mistral's: the query at position p reads keys p - window + 1 .. p)
reaches the allocators as `slide`: the engine says where a sequence's window now starts, and
the allocator lets go of what its unit allows; what it still holds of the tokens before the
window is `stale`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from array import array
from dataclasses import dataclass
from typing import Sequence


class OutOfKVMemory(Exception):
    """An operation needed more slots than the budget holds; the allocator state is unchanged."""


@dataclass(frozen=True)
class Usage:
    """A snapshot of slot accounting, in slots (multiply by bytes_per_token for bytes).

    Conservation: backed == live + stale + reserved + internal + cached + free.
    """

    budget: int  # slots the memory budget allows
    backed: int  # slots with physical memory behind them now
    # distinct token states stored, referenced and still to be read: inside the attention
    # window of some sequence that holds them (a shared prefix counts once)
    live: int
    # sum of running sequences' KV lengths inside their windows (a shared prefix counts per
    # sequence)
    logical: int
    reserved: int  # allocated for tokens that will be written later
    internal: int  # allocated and never to be written (slack past the final length)
    cached: int  # held by the prefix cache with no running reference (evictable)
    free: int  # backed and not allocated, not cached
    largest_free_run: int  # longest run of free slots usable by one request
    # written tokens still held although every sequence holding them has slid its window past
    # them (never read again; released when the allocator's unit allows). Last, with a
    # default, so that a snapshot of a run without a window reads as it always did.
    stale: int = 0

    @property
    def utilization(self) -> float:
        """live / backed: the share of physical KV memory that holds useful token state."""
        return self.live / self.backed if self.backed else 0.0

    @property
    def external_fragmentation(self) -> float:
        """1 - largest_free_run / free: free memory one contiguous request cannot use."""
        return 1.0 - self.largest_free_run / self.free if self.free else 0.0


def split_allocated(allocated: int, length: int, final_length: int | None) -> tuple[int, int]:
    """Split a sequence's allocated-but-unwritten slots into (reserved, internal).

    Slots up to the final length will be written later (reserved); slots past it never will
    (internal). With no known final length every unwritten slot counts as reserved.
    """
    unwritten = allocated - length
    if final_length is None:
        return unwritten, 0
    reserved = max(0, min(allocated, final_length) - length)
    return reserved, unwritten - reserved


def check_slide(seq_id: int, old_start: int, start: int, length: int) -> None:
    """ValueError unless a window start may move from old_start to start (forward, within the
    sequence's length)."""
    if not old_start <= start <= length:
        raise ValueError(f"seq {seq_id}: its window cannot move from token {old_start} to "
                         f"{start} (a window only moves forward, within the {length} tokens)")


NO_BLOCK = -1  # the block-table entry of a block that a slide let go (never to be read)


@dataclass(frozen=True)
class SeqLayout:
    """Where a sequence's KV lives, for a GPU pool to address.

    Physical block ids are global: block b lives in segment b // blocks_per_segment at block
    offset b % blocks_per_segment. Token i of the sequence is slot i % block_size of
    block_table[i // block_size]. Blocks a slide let go read NO_BLOCK: they lie wholly before
    the sequence's window, where nothing reads.

    block_table is an int32 array.array (typecode "i"): the allocator's own form of it, so
    that handing it over is one copy of its bytes and numpy reads it without a copy, where a
    tuple of Python ints cost a step time per entry at block size 1. A snapshot: later changes
    of the sequence do not show in it. Read it, never change it (an allocator whose tables
    never change hands the same one out again).
    """

    block_size: int
    blocks_per_segment: int
    block_table: array

    def segment_of(self, block: int) -> int:
        return block // self.blocks_per_segment

    def slot_mapping(self, start: int, stop: int) -> list[int]:
        """Global slot ids (block * block_size + offset) of tokens start..stop-1."""
        bs = self.block_size
        return [self.block_table[i // bs] * bs + i % bs for i in range(start, stop)]


@dataclass(frozen=True, slots=True)
class BlockCopy:
    """A copy the allocator decided on: the first num_tokens slots of block src go to block dst
    (copy-on-write of a shared, partly written block; a static fork into its own reservation).
    An executor holding real KV applies it before the step that follows writes anything."""

    src: int
    dst: int
    num_tokens: int


@dataclass(frozen=True, slots=True)
class HostCopy:
    """Whole units of KV moving between the device and the allocator's host tier (the CPU tier
    of the prefix cache): unit units[i] and host block host_blocks[i] hold the same tokens.
    to_host: a prefix-cache entry evicted from the device keeps its KV on the host (read the
    units before anything reuses them); else a prefix hit on the host tier is brought back into
    fresh units (written before the step reads them). It comes after the first copies_before
    block copies reported with it, and after the host copies before it in the list."""

    to_host: bool
    units: tuple[int, ...]
    host_blocks: tuple[int, ...]
    copies_before: int = 0


class Allocator(ABC):
    """The shared interface. Every operation is atomic: it succeeds, or raises OutOfKVMemory
    (or ValueError for a misuse such as an unknown seq_id) and leaves the state exactly as before.

    Prefix sharing: `prefix_hashes` are the trace's chunk hashes, one per `chunk_tokens` tokens of
    the prompt, position-dependent (equal hash at equal position = reusable prefix). Allocators
    derive their own cache keys from them with `allocators.prefix.block_keys`.

    Block copies an operation decides on are appended to `_block_copies` (set up by each
    allocator's constructor) and handed over by take_block_copies(); an allocator with a host
    tier hands over its host copies by take_host_copies(), to be drained together with them.
    """

    _block_copies: list[BlockCopy]

    @property
    @abstractmethod
    def block_size(self) -> int: ...

    @property
    @abstractmethod
    def blocks_per_segment(self) -> int:
        """Blocks of every segment, fixed for the allocator's life (the SeqLayout geometry), so
        that a GPU pool can size its segment tensors before any sequence exists."""

    @abstractmethod
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
        """Give a new sequence room for num_tokens tokens; return how many leading tokens were
        found in the prefix cache (their KV needs no prefill). final_tokens is the length the
        sequence will reach (prompt + max output), used by reservations and waste accounting.
        prompt_tokens: the length of the prompt the hashes describe (their last chunk may be
        partial), where num_tokens may run past it (a recompute prefills the tokens generated
        so far too); None: the prompt ends no earlier than num_tokens. pending: the tokens
        past the prefix hit are room for a prefill still to run, and no other sequence may
        share their KV before written() reports it written (else it counts as written now)."""

    def written(self, seq_id: int, num_tokens: int) -> None:
        """The KV of a pending prefill's first num_tokens tokens is written by the end of the
        step being scheduled, so other sequences may share it from then on (a prefix-cache hit
        in the same step is safe: an executor writes each layer's new K/V before attention
        reads any). Tokens reported before stay written. Nothing to do without a prefix cache.
        """

    @abstractmethod
    def cached_prefix_tokens(self, prefix_hashes: Sequence[int] | None, chunk_tokens: int) -> int:
        """Leading tokens of a prompt with these chunk hashes that the prefix cache holds now,
        without changing any state (a router asks every replica before choosing one)."""

    @abstractmethod
    def can_allocate(self, num_tokens: int, *, final_tokens: int | None = None) -> bool:
        """Whether allocate would succeed now, without prefix hits, without changing state."""

    @abstractmethod
    def extend(self, seq_id: int, num_tokens: int = 1) -> None:
        """Grow a sequence by num_tokens written tokens (decode, or the next prefill chunk)."""

    @abstractmethod
    def fork(self, parent_id: int, child_id: int) -> None:
        """Make child share all of parent's KV (copy-on-write of a partly written last unit)."""

    @abstractmethod
    def truncate(self, seq_id: int, num_tokens: int) -> None:
        """Keep only the first num_tokens (1..length, and no fewer than the window start)
        written tokens of a sequence: the rollback of rejected speculative tokens. Units left
        holding no kept token are let go (a static reservation stays whole); registered
        prefix-cache entries stay valid for their other holders. A kept, partly cut unit that
        others share is never rewritten under them: the sequence gets a copy (reported), which
        needs a free unit (OutOfKVMemory without)."""

    @abstractmethod
    def slide(self, seq_id: int, start: int) -> None:
        """The sequence's attention window now starts at token `start` (it never moves back;
        start <= length): no query will read the tokens before it again. Units that hold only
        such tokens are let go, as free() lets units go (a registered prefix-cache entry waits
        in the cache: its KV is still that prefix's); the tokens before `start` that the
        allocator's unit keeps it from letting go are stale. A static reservation stays whole.
        Needs no memory, so it never raises OutOfKVMemory."""

    @abstractmethod
    def free(self, seq_id: int) -> None:
        """Release a sequence; cacheable blocks stay in the prefix cache until evicted."""

    @abstractmethod
    def layout(self, seq_id: int) -> SeqLayout: ...

    @abstractmethod
    def length(self, seq_id: int) -> int:
        """Tokens stored for the sequence."""

    @abstractmethod
    def usage(self) -> Usage: ...

    def take_block_copies(self) -> list[BlockCopy]:
        """The copies decided since the last call, in order; the list is handed over."""
        copies, self._block_copies = self._block_copies, []
        return copies

    @property
    def host_tier_blocks(self) -> int:
        """Blocks (of block_size slots) of the host tier of the prefix cache; 0: none."""
        return 0

    def take_host_copies(self) -> list[HostCopy]:
        """The host copies decided since the last call, in order (their copies_before counts
        the block copies take_block_copies hands over at the same time)."""
        return []

    @abstractmethod
    def segments(self) -> tuple[int, ...]:
        """Ids of the live segments, ascending (a GPU pool keeps one tensor per live segment;
        an id can be reused after its segment was released)."""
