"""Invariants every allocator keeps under random operation sequences (a hypothesis state machine).

Beside the allocator the machine keeps a model of what a GPU pool would hold: the symbolic content
of every written slot. A prompt token inside hashed chunks is named by the chunk hashes up to its
chunk and its position, so equal names mean equal KV and may share a slot; any other token (past
the prompt where its length is given, say a recompute's generated tokens) belongs to its sequence
(and to the forks that copied it). After every step each live token must still read its own content
from the slot its layout maps it to: this catches a slot owned twice, a prefix-cache hit on the
wrong data, a block reused while still referenced, and a write into a shared block without
copy-on-write. Copies reach the model only as the allocator reports them (take_block_copies), so a
copy made but not reported fails too. A truncated sequence's own tokens written again get a new
name (its rollback count), so that rewriting a slot another sequence still reads is caught even
where the old and new token sit at the same position. Slides move a sequence's window start: only
the tokens from there on must still read their content; what the allocator still holds before it is
stale, and the stale and live figures are recounted from the layouts (a slot stale for one holder
and read by another is live). A pending allocation (room for a prefill still to run) writes only as
written() says; until then its unwritten tokens are not read, and no other sequence may be given
them as a prefix hit. Beside the single operations, rules drive them as the
decoding patterns do: parallel samples, a beam search step, a speculative verification and its
rollback.

With a host tier the model keeps host memory too: an evicted prefix entry's content reaches it
only through the host copies the allocator reports (take_host_copies, applied among the block
copies where their copies_before says), and a prefix hit on the host tier reads its content back
only through them, so a host block given twice, a restore from the wrong block or a copy applied
after its units were reused fails the same check. The host-tier configurations slide windows
too: a slide puts a sequence's first entries in the LRU before its later ones, so evictions (and
offloads) no longer come leaves first.
"""
from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from allocators import OutOfKVMemory, make_allocator
from allocators.base import NO_BLOCK

BUDGET = 512  # slots; a whole number of blocks and segments for every configuration below
CONFIGS = [
    pytest.param("static", {"fit": "first", "align_tokens": 16}, id="static-first"),
    pytest.param("static", {"fit": "best", "align_tokens": 8}, id="static-best"),
    pytest.param("paged", {"block_size": 16}, id="paged"),
    pytest.param("segmented", {"segment_tokens": 128}, id="segmented"),
    pytest.param("hybrid", {"block_size": 8, "segment_tokens": 128}, id="hybrid"),
    # Host tiers smaller than one family's prompt, so that they evict too.
    pytest.param("paged", {"block_size": 16, "host_cache_slots": 80}, id="paged-host"),
    pytest.param("segmented", {"segment_tokens": 128, "host_cache_slots": 72},
                 id="segmented-host"),
    pytest.param("hybrid", {"block_size": 8, "segment_tokens": 128, "host_cache_slots": 44},
                 id="hybrid-host"),
]
# Chunk-hash families: the first two share three chunks, so prefixes of several lengths match.
PREFIXES = ((1, 2, 3, 4, 5, 6), (1, 2, 3, 7, 8, 9), (10, 11, 12, 13, 14, 15))
NEVER_ALLOCATED = -1
SETTINGS = settings(max_examples=200, stateful_step_count=30, deadline=None)


class AllocatorMachine(RuleBasedStateMachine):
    def __init__(self, name: str, params: dict) -> None:
        super().__init__()
        self.alloc = make_allocator(name, BUDGET, **params)
        self.static = name == "static"
        self.fixed_pool = name in ("static", "paged")  # backed from the start, one segment set
        self.chunk_entries = name == "segmented"  # a prefix entry spans a chunk of pages
        self.contents: dict[int, list[tuple]] = {}  # seq -> content of each written token
        # seq -> (hashes, chunk_tokens, prompt tokens if given)
        self.prompts: dict[int, tuple[tuple[int, ...], int, int | None]] = {}
        self.slots: dict[int, list[int]] = {}  # seq -> slot of each token at the last check
        self.rollbacks: dict[int, int] = {}  # seq -> truncations so far (names its new tokens)
        self.starts: dict[int, int] = {}  # seq -> its window start (tokens before: never read)
        self.unwritten: dict[int, range] = {}  # seq -> positions a pending prefill is yet to write
        self.stale_slots: set[int] = set()  # slots held before some window, at the last check
        self.memory: dict[int, tuple] = {}  # slot -> content last written there
        self.host_memory: dict[int, tuple] = {}  # host slot -> content last copied there
        self.live_segments: tuple[int, ...] = self.alloc.segments()
        self.blocks_per_segment = 0  # learnt from the first layout
        self.next_id = 0

    # -- rules ---------------------------------------------------------------------------------

    @rule(
        num_tokens=st.integers(1, 96),
        extra=st.one_of(st.none(), st.integers(0, 64)),
        family=st.integers(-1, len(PREFIXES) - 1),
        chunks=st.integers(0, 6),
        chunk_tokens=st.sampled_from([4, 16]),
        short=st.one_of(st.none(), st.integers(0, 15)),
        pending=st.booleans(),
    )
    def allocate(self, num_tokens, extra, family, chunks, chunk_tokens, short, pending):
        """short: the prompt the hashes describe is given, its last chunk that many tokens
        short (and num_tokens may run past it: a recompute's generated tokens are its own)."""
        seq = self._new_id()
        final = None if extra is None else num_tokens + extra
        # Hash values differ per chunk size: equal hashes must mean equal tokens.
        hashes = ()
        if family >= 0:
            hashes = tuple(h + 1000 * chunk_tokens for h in PREFIXES[family][:chunks])
        prompt = None
        if hashes and short is not None:
            prompt = len(hashes) * chunk_tokens - short % chunk_tokens
        before = self._snapshot()
        room = self.alloc.can_allocate(num_tokens, final_tokens=final)
        assert self._snapshot() == before, "can_allocate changed the state"
        try:
            hit = self.alloc.allocate(
                seq, num_tokens, final_tokens=final, prefix_hashes=hashes or None,
                chunk_tokens=chunk_tokens if hashes else 0, prompt_tokens=prompt, pending=pending,
            )
        except OutOfKVMemory:
            assert not room, "can_allocate said yes, allocate failed"
            self._assert_unchanged(before)
            if not self.static:
                assert self._available(before[0]) < num_tokens + self.alloc.block_size
            return
        if not hashes:
            assert room, "allocate succeeded without prefix hits where can_allocate said no"
        assert 0 <= hit <= min(num_tokens, prompt or len(hashes) * chunk_tokens)
        if self.static:
            assert hit == 0
        self.prompts[seq] = (hashes, chunk_tokens, prompt)
        self.starts[seq] = 0
        self.contents[seq] = [self._token(seq, p) for p in range(num_tokens)]
        if pending and hit < num_tokens:
            self.unwritten[seq] = range(hit, num_tokens)
            self._check()
        else:
            self._check(writes={seq: range(hit, num_tokens)})

    @precondition(lambda self: self.unwritten)
    @rule(pick=st.integers(0, 63), k=st.integers(0, 1 << 16))
    def written(self, pick, k):
        """A pending allocation's KV is written up to some token (to its end, say), or is
        reported again up to where it already was (nothing changes)."""
        seq = sorted(self.unwritten)[pick % len(self.unwritten)]
        todo = self.unwritten[seq]
        stop = max(0, todo.start - 1 + k % (len(todo) + 2))  # from a no-op to the end
        before = self._snapshot()
        self.alloc.written(seq, stop)
        after = self._snapshot()
        assert after[:3] == before[:3], "written() changed layouts or figures"
        assert all(a >= b for a, b in zip(after[3], before[3])), "a cached prefix shrank"
        if stop > todo.start:
            self.unwritten[seq] = range(stop, todo.stop)
            if stop == todo.stop:
                del self.unwritten[seq]
            self._check(writes={seq: range(todo.start, stop)})

    @precondition(lambda self: self.contents)
    @rule(pick=st.integers(0, 63), k=st.integers(1, 24))
    def extend(self, pick, k):
        self._extend(self._pick(pick), k)

    def _extend(self, seq: int, k: int) -> bool:
        before = self._snapshot()
        old = len(self.contents[seq])
        try:
            self.alloc.extend(seq, k)
        except OutOfKVMemory:
            self._assert_unchanged(before)
            if self.static:
                assert old + k > len(before[1][seq][0].block_table) * self.alloc.block_size
            else:
                assert self._available(before[0]) < k + 2 * self.alloc.block_size
            return False
        self.contents[seq].extend(self._token(seq, p) for p in range(old, old + k))
        self._check(writes={seq: range(old, old + k)})
        return True

    @precondition(lambda self: self.contents)
    @rule(pick=st.integers(0, 63))
    def fork(self, pick):
        self._fork(self._pick(pick))

    def _fork(self, parent: int) -> int | None:
        """The child's id, or None when the fork did not fit."""
        child = self._new_id()
        before = self._snapshot()
        try:
            self.alloc.fork(parent, child)
        except OutOfKVMemory:
            self._assert_unchanged(before)
            if self.static:
                capacity = len(before[1][parent][0].block_table) * self.alloc.block_size
                assert before[0].largest_free_run < capacity
            else:
                assert self._available(before[0]) < 2 * self.alloc.block_size
            return None
        self.prompts[child] = self.prompts[parent]
        self.starts[child] = self.starts[parent]
        self.contents[child] = list(self.contents[parent])
        self.slots[child] = self.slots[parent]  # the child starts from the parent's slots
        if parent in self.unwritten:
            self.unwritten[child] = self.unwritten[parent]
        self._check()
        return child

    @precondition(lambda self: self.contents)
    @rule(pick=st.integers(0, 63), cut=st.integers(0, 1 << 16))
    def truncate(self, pick, cut):
        seq = self._pick(pick)
        length = len(self.contents[seq])
        lowest = max(1, self.starts[seq])  # the window's tokens are never cut
        self._truncate(seq, lowest + cut % (length - lowest + 1))

    def _truncate(self, seq: int, keep: int) -> None:
        before = self._snapshot()
        try:
            self.alloc.truncate(seq, keep)
        except OutOfKVMemory:
            # Only a copy of shared units cut partway needs memory: one prefix entry at most.
            self._assert_unchanged(before)
            assert not self.static
            assert self._available(before[0]) < max(16, self.alloc.block_size)
            return
        if self.static:
            assert before[1][seq][0] == self.alloc.layout(seq), "a reservation changed"
        del self.contents[seq][keep:]
        self.rollbacks[seq] = self.rollbacks.get(seq, 0) + 1
        todo = self.unwritten.pop(seq, range(0))
        if todo.start < keep:
            self.unwritten[seq] = range(todo.start, min(todo.stop, keep))
        self._check()

    @precondition(lambda self: self.contents)
    @rule(pick=st.integers(0, 63), advance=st.integers(0, 24), to_end=st.integers(0, 7))
    def slide(self, pick, advance, to_end):
        """The window start moves forward: units wholly before it go (whole prefix entries of
        several units only together), no new memory is needed, and static keeps every block."""
        seq = self._pick(pick)
        length = len(self.contents[seq])
        start = length if to_end == 0 else min(length, self.starts[seq] + advance)
        before = self._snapshot()
        self.alloc.slide(seq, start)
        self.starts[seq] = start
        layout = self.alloc.layout(seq)
        if self.static:
            assert layout == before[1][seq][0], "a reservation changed"
        else:
            bs = self.alloc.block_size
            released = [i for i, b in enumerate(layout.block_table) if b == NO_BLOCK]
            assert released == list(range(len(released))), "only a front is let go"
            lingering = start // bs - len(released)  # held units wholly before the window
            hashes, chunk_tokens, _ = self.prompts[seq]
            entry = max(1, chunk_tokens // bs) if hashes and self.chunk_entries else 1
            assert lingering < entry, f"{lingering} units before the window still held"
        assert self._available(self.alloc.usage()) >= self._available(before[0]), (
            "a slide took memory")
        self._check()

    @precondition(lambda self: self.contents)
    @rule(pick=st.integers(0, 63))
    def free(self, pick):
        self._free(self._pick(pick))

    def _free(self, seq: int) -> None:
        self.alloc.free(seq)
        self._forget(seq)
        self._check()

    # -- the decoding patterns, as the scheduler drives them (harness.engine.decoding) -----------

    @precondition(lambda self: self.contents)
    @rule(pick=st.integers(0, 63), drafts=st.integers(1, 8), accepted=st.integers(0, 8))
    def speculate(self, pick, drafts, accepted):
        """A verification writes the last token and the drafts; the rejected ones go back."""
        seq = self._pick(pick)
        written = len(self.contents[seq])
        if self._extend(seq, drafts + 1):
            self._truncate(seq, written + 1 + min(accepted, drafts))

    @precondition(lambda self: self.contents)
    @rule(pick=st.integers(0, 63),
          continuations=st.lists(st.integers(0, 3), min_size=1, max_size=4))
    def beam_step(self, pick, continuations):
        """Beams after a step: one without a continuation is freed, one with c is forked c - 1
        times, and every beam left writes its next token (a fork's shared last block too)."""
        live = sorted(self.contents)
        start = pick % len(live)
        beams = []
        for seq, count in zip(live[start:], continuations):
            if not count:
                self._free(seq)
                continue
            beams.append(seq)
            beams.extend(child for child in (self._fork(seq) for _ in range(count - 1))
                         if child is not None)
        for seq in beams:
            self._extend(seq, 1)

    @precondition(lambda self: self.contents)
    @rule(pick=st.integers(0, 63), n=st.integers(2, 4))
    def sample(self, pick, n):
        """Parallel sampling: n - 1 children forked from a prompt, then each writes a token."""
        seq = self._pick(pick)
        samples = [seq, *(self._fork(seq) for _ in range(n - 1))]
        for sample in samples:
            if sample is not None:
                self._extend(sample, 1)

    @rule(extra=st.integers(1, 64))
    def allocate_beyond_budget(self, extra):
        before = self._snapshot()
        assert not self.alloc.can_allocate(BUDGET + extra)
        with pytest.raises(OutOfKVMemory):
            self.alloc.allocate(self._new_id(), BUDGET + extra)
        self._assert_unchanged(before)

    @rule(op=st.sampled_from(["extend", "fork", "free", "layout", "length", "reuse", "fork-onto",
                              "truncate", "truncate-past", "truncate-all", "truncate-window",
                              "slide", "slide-back", "slide-past"]))
    def misuse(self, op):
        """Unknown or reused sequence ids, and windows moved back or past the end, are a
        ValueError and change nothing."""
        alloc = self.alloc
        if op in ("reuse", "fork-onto", "truncate-past", "truncate-all", "slide-past",
                  "truncate-window", "slide-back") and not self.contents:
            return
        live = next(iter(self.contents), NEVER_ALLOCATED)
        if op in ("truncate-window", "slide-back") and self.starts[live] < 2:
            return
        calls = {
            "extend": lambda: alloc.extend(NEVER_ALLOCATED),
            "fork": lambda: alloc.fork(NEVER_ALLOCATED, self._new_id()),
            "free": lambda: alloc.free(NEVER_ALLOCATED),
            "layout": lambda: alloc.layout(NEVER_ALLOCATED),
            "length": lambda: alloc.length(NEVER_ALLOCATED),
            "reuse": lambda: alloc.allocate(live, 1),
            "fork-onto": lambda: alloc.fork(live, live),
            "truncate": lambda: alloc.truncate(NEVER_ALLOCATED, 1),
            "truncate-past": lambda: alloc.truncate(live, alloc.length(live) + 1),
            "truncate-all": lambda: alloc.truncate(live, 0),
            "truncate-window": lambda: alloc.truncate(live, self.starts.get(live, 0) - 1),
            "slide": lambda: alloc.slide(NEVER_ALLOCATED, 0),
            "slide-back": lambda: alloc.slide(live, self.starts.get(live, 0) - 1),
            "slide-past": lambda: alloc.slide(live, alloc.length(live) + 1),
        }
        before = self._snapshot()
        with pytest.raises(ValueError):
            calls[op]()
        self._assert_unchanged(before)

    @rule()
    def drain(self):
        """Free everything: nothing may leak, and the whole budget must be usable again."""
        for seq in sorted(self.contents):
            self.alloc.free(seq)
            self._forget(seq)
            self._check()
        u = self.alloc.usage()
        assert (u.live, u.logical, u.reserved, u.internal, u.stale) == (0, 0, 0, 0, 0)
        assert u.free == u.backed - u.cached
        if self.static:
            assert u.free == u.largest_free_run == u.backed
        whole = self._new_id()
        self.alloc.allocate(whole, BUDGET, final_tokens=BUDGET)
        self.prompts[whole] = ((), 0, None)
        self.starts[whole] = 0
        self.contents[whole] = [self._token(whole, p) for p in range(BUDGET)]
        self._check(writes={whole: range(BUDGET)})  # overwrites every slot, cached ones too
        self.alloc.free(whole)
        self._forget(whole)
        self._check()

    def teardown(self):
        self.drain()

    # -- the model -----------------------------------------------------------------------------

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _pick(self, pick: int) -> int:
        live = sorted(self.contents)
        return live[pick % len(live)]

    def _forget(self, seq: int) -> None:
        del self.contents[seq], self.prompts[seq], self.slots[seq], self.starts[seq]
        self.rollbacks.pop(seq, None)
        self.unwritten.pop(seq, None)

    def _token(self, seq: int, position: int) -> tuple:
        hashes, chunk_tokens, prompt = self.prompts[seq]
        if position < (len(hashes) * chunk_tokens if prompt is None else prompt):
            return ("prefix", hashes[: position // chunk_tokens + 1], position)
        return ("own", seq, position, self.rollbacks.get(seq, 0))

    def _available(self, u) -> int:
        """Slots a request could still get: free, evictable, and budget not yet backed."""
        return u.free + u.cached + u.budget - u.backed

    def _snapshot(self):
        layouts = {s: (self.alloc.layout(s), self.alloc.length(s)) for s in self.contents}
        # What either tier of the prefix cache holds of every prompt family.
        cached = tuple(self.alloc.cached_prefix_tokens(tuple(h + 1000 * c for h in family), c)
                       for family in PREFIXES for c in (4, 16))
        return self.alloc.usage(), layouts, self.alloc.segments(), cached

    def _assert_unchanged(self, before) -> None:
        assert self._snapshot() == before, "a failed operation changed the state"

    def _check(self, writes=None) -> None:
        """Replay the step on the memory model, then check accounting and every live token."""
        alloc = self.alloc
        layouts = {s: alloc.layout(s) for s in self.contents}
        if layouts:
            self.blocks_per_segment = next(iter(layouts.values())).blocks_per_segment
        segments = alloc.segments()
        assert list(segments) == sorted(set(segments))
        # Copies run before a released segment's memory goes (an eviction that empties a
        # segment copies its units to the host first).
        self._apply_copies()
        self._drop_released(set(segments))
        new_slots, stale = {}, set()
        for seq, layout in layouts.items():
            length, start = alloc.length(seq), self.starts[seq]
            assert length == len(self.contents[seq])
            self._check_layout(layout, length, start, set(segments))
            # Slots of the window's tokens, None before it (never read again).
            new_slots[seq] = [None] * start + layout.slot_mapping(start, length)
            held = next(i for i, b in enumerate([*layout.block_table, 0]) if b != NO_BLOCK)
            stale.update(layout.slot_mapping(held * layout.block_size, start))
        bs = alloc.block_size
        for seq, positions in (writes or {}).items():
            table = layouts[seq].block_table
            for p in positions:
                # A window moved past a token before its KV was written may still hold its slot.
                if table[p // bs] != NO_BLOCK:
                    self.memory[table[p // bs] * bs + p % bs] = self.contents[seq][p]
        for seq, slots in new_slots.items():
            unwritten = self.unwritten.get(seq, range(0))
            for p, slot in enumerate(slots):
                if slot is None or p in unwritten:
                    continue
                assert self.memory.get(slot) == self.contents[seq][p], (
                    f"token {p} of seq {seq} in slot {slot} reads {self.memory.get(slot)}, "
                    f"expected {self.contents[seq][p]}"
                )
        self.slots = new_slots
        live = {slot for slots in new_slots.values() for slot in slots if slot is not None}
        self.stale_slots = stale - live
        self._check_usage(layouts, segments)

    def _apply_copies(self) -> None:
        """Written tokens move only by the copies the allocator reports, applied in order: each
        host copy after the first copies_before block copies."""
        alloc = self.alloc
        bs = alloc.block_size
        copies = alloc.take_block_copies()
        done = 0
        for host_copy in alloc.take_host_copies():
            assert done <= host_copy.copies_before <= len(copies)
            self._block_copies(copies[done : host_copy.copies_before])
            done = host_copy.copies_before
            blocks = host_copy.host_blocks
            assert len(host_copy.units) == len(blocks) > 0
            assert len(set(blocks)) == len(blocks)
            assert all(0 <= b < alloc.host_tier_blocks for b in blocks)
            for unit, block in zip(host_copy.units, blocks):
                device = range(unit * bs, (unit + 1) * bs)
                host = range(block * bs, (block + 1) * bs)
                src, dst = (device, host) if host_copy.to_host else (host, device)
                source, target = ((self.memory, self.host_memory) if host_copy.to_host
                                  else (self.host_memory, self.memory))
                for s, d in zip(src, dst):
                    target[d] = source.get(s)
        self._block_copies(copies[done:])

    def _block_copies(self, copies) -> None:
        bs = self.alloc.block_size
        for copy in copies:
            assert 0 < copy.num_tokens <= bs and copy.src != copy.dst
            for i in range(copy.num_tokens):
                self.memory[copy.dst * bs + i] = self.memory.get(copy.src * bs + i)

    def _check_layout(self, layout, length: int, start: int, segments: set[int]) -> None:
        bs = self.alloc.block_size
        assert layout.block_size == bs
        assert len(layout.block_table) * bs >= length
        for index, block in enumerate(layout.block_table):
            if block == NO_BLOCK:
                assert (index + 1) * bs <= start, f"block {index} let go inside the window"
                continue
            assert block >= 0 and layout.segment_of(block) in segments, f"block {block} unbacked"
            if self.fixed_pool:
                assert block < self.alloc.usage().backed // bs

    def _drop_released(self, segments: set[int]) -> None:
        """A released segment's memory is gone; a reused segment id starts empty."""
        released = set(self.live_segments) - segments
        self.live_segments = tuple(sorted(segments))
        if released and self.memory:
            per_segment = self.alloc.block_size * self.blocks_per_segment
            self.memory = {s: c for s, c in self.memory.items() if s // per_segment not in released}

    def _check_usage(self, layouts, segments) -> None:
        u = self.alloc.usage()
        assert u.budget == BUDGET and 0 <= u.backed <= u.budget
        assert min(u.live, u.logical, u.reserved, u.internal, u.cached, u.free) >= 0
        assert u.backed == u.live + u.stale + u.reserved + u.internal + u.cached + u.free
        assert u.logical == sum(len(c) - self.starts[s] for s, c in self.contents.items())
        assert u.live <= u.logical
        # Exact ref counting: live counts each slot a window reads once, stale each slot held
        # that no window reads, and the blocks the running sequences hold are exactly their
        # live, stale, reserved and internal slots.
        assert u.live == len({slot for slots in self.slots.values() for slot in slots
                              if slot is not None})
        assert u.stale == len(self.stale_slots)
        held = {block for layout in layouts.values() for block in layout.block_table} - {NO_BLOCK}
        assert len(held) * self.alloc.block_size == u.live + u.stale + u.reserved + u.internal
        assert u.largest_free_run <= u.free
        if self.blocks_per_segment:
            assert u.backed == len(segments) * self.blocks_per_segment * self.alloc.block_size
        if self.static:
            assert u.live == u.logical and u.cached == 0
            assert u.stale == sum(self.starts.values())
            tables = [b for layout in layouts.values() for b in layout.block_table]
            assert len(tables) == len(set(tables)), "static reservations overlap"
        else:
            assert u.largest_free_run == u.free, "any free unit serves a non-contiguous allocator"


@pytest.mark.parametrize("name, params", CONFIGS)
def test_allocator_invariants(name, params):
    run_state_machine_as_test(lambda: AllocatorMachine(name, params), settings=SETTINGS)
