"""Continuous batching like vLLM's: FCFS admission, token and sequence limits, chunked prefill,
preemption by recompute or swap, and rejection of requests that can never run.

Each step, running requests go first in admission order (decode: one token per sample; an
unfinished prefill: its next chunk), then swapped requests come back, then waiting requests are
admitted in queue order while tokens, sequence slots and KV memory last. A scheduling policy
(policies.py) sets the step's token budget, the queue order, and whether decodes go first or
share no step with prefills. When a running request
cannot grow, the latest admitted request is preempted; a step that preempted admits nobody.
The scheduler alone moves requests between the waiting, running and swapped queues, and its
batches tell the executor what became of each sequence (forked, swapped, preempted, finished),
so that an executor holding real KV follows these rules without re-deriving them.

Under a sliding window, after every step each running request's window moves to where its next
query starts reading (position p reads p - window + 1 .. p) and the allocator is told (slide),
so that it lets go of what it can before the next step; steps count only the keys attention
reads. Admission and swap-in still take room for the whole KV first (the slide after the step
gives back what the window does not need).
"""
from __future__ import annotations

import dataclasses
from collections import deque
from typing import Protocol

from allocators import Allocator, OutOfKVMemory
from harness.engine.batch import Batch, Fork, ScheduledSeq, attended_keys, segment_changes
from harness.engine.decode_runs import DecodeRuns
from harness.engine.policies import make_policy
from harness.engine.sequences import Group
from harness.engine.preemption import Preempting
from harness.engine.swap import SwapSpace
from harness.model.config import SchedulerConfig


class RequestEvents(Protocol):
    """Where the scheduler reports what happens to requests (the recorder)."""

    def admitted(self, rid: int, t: float, hit_tokens: int, host_hit_tokens: int) -> None: ...
    def first_token(self, rid: int, t: float) -> None: ...
    def finished(self, rid: int, t: float) -> None: ...
    def rejected(self, rid: int, reason: str) -> None: ...
    def preempted(self, rid: int) -> None: ...


class Scheduler(DecodeRuns, Preempting):
    """The waiting, running and swapped queues of one run and the per-step decisions."""

    def __init__(
        self,
        config: SchedulerConfig,
        allocator: Allocator,
        events: RequestEvents,
        *,
        budget_slots: int,
        swap_slots: int,
        chunk_tokens: int = 0,
        max_model_len: int | None = None,
        with_layouts: bool = False,
        sliding_window: int | None = None,
    ) -> None:
        self.config = config
        self.policy = make_policy(config)  # the choices in which scheduling policies differ
        self.allocator = allocator
        self.events = events
        self.budget_slots = budget_slots
        self.swap = SwapSpace(swap_slots)
        self.chunk_tokens = chunk_tokens  # tokens per prefix hash of the trace
        self.max_model_len = max_model_len
        # Whether batches carry block tables and segment changes (an executor holding real KV).
        self.with_layouts = with_layouts
        self.window = sliding_window  # keys a query reads; None: every key before it
        self._segments: tuple[int, ...] = ()  # the allocator's segments as the last batch told
        self.waiting: deque[Group] = deque()
        self.running: list[Group] = []  # admission order: the last is the preemption victim
        self.swapped: deque[Group] = deque()
        self.num_running_seqs = 0
        self._blocked = False  # the queue head did not fit; retry once memory is freed
        self._preempted = False
        self._scheduled: list[tuple[Group, int]] = []  # (group, prefill tokens; 0 = decode)
        # The next step's batch: it collects the lifecycle events from now on (requests that
        # finish in complete(), events of a step that ran nothing) until a step runs it.
        self._next = Batch()

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting or self.swapped)

    def add(self, g: Group) -> None:
        """A request arrives: queue it, or reject it at once when it can never run."""
        reason = self._impossible(g)
        if reason:
            self.events.rejected(g.rid, reason)
        else:
            self.policy.enqueue(self.waiting, g)

    def _impossible(self, g: Group) -> str:
        """Why g can never run (empty when it can): lengths, sample count, memory."""
        cfg = self.config
        total = g.prompt + g.output
        if self.max_model_len is not None and total > self.max_model_len:
            return f"prompt + output = {total} tokens > max_model_len {self.max_model_len}"
        if g.n > cfg.max_num_seqs:
            return f"n = {g.n} samples > max_num_seqs {cfg.max_num_seqs}"
        if not cfg.chunked_prefill and total - 1 > self.policy.token_budget:
            # Unchunked, a prefill runs whole in one step, and a recomputed request prefills
            # its prompt and output (vLLM asks max_num_batched_tokens >= max_model_len).
            return (
                f"prompt + output = {total} tokens > the step's token budget "
                f"{self.policy.token_budget} without chunked prefill"
            )
        least = g.min_kv_slots(self.window)
        if least > self.budget_slots:
            return f"needs at least {least} KV slots; the budget holds {self.budget_slots}"
        return ""

    def schedule(self, now: float) -> Batch | None:
        """Choose this step's work and allocate its KV; None when there is nothing to do."""
        batch = self._next
        self._scheduled = []
        self._preempted = False
        policy = self.policy
        budget = policy.token_budget
        if policy.prefill_first:
            budget = self._schedule_running(batch, budget, decodes=False)
            if not self.swapped:
                self._admit(batch, budget, now)
            if not batch.seqs:  # no prefill work: a decode step
                self._schedule_running(batch, budget, prefills=False)
                if self.swapped and not (self.running and self._preempted):
                    self._swap_in(batch)
        else:
            if policy.decodes_first:
                budget = self._schedule_running(batch, budget, prefills=False)
            budget = self._schedule_running(batch, budget, decodes=not policy.decodes_first)
            if self.running and self._preempted:
                pass  # like vLLM: a step that had to preempt admits nobody
            elif self.swapped:
                self._swap_in(batch)
            else:
                self._admit(batch, budget, now)
        if not batch.has_work:
            return None  # its events, if any, go with the next batch
        self._next = Batch()
        self._hand_over_memory(batch)
        return batch

    def _hand_over_memory(self, batch: Batch) -> None:
        """Put the allocator's copies (always drained), and for an executor holding real KV the
        block tables and segment changes, into the batch."""
        alloc = self.allocator
        self._take_copies(batch)
        if not self.with_layouts:
            return
        layout = alloc.layout
        for seq in batch.seqs:
            seq.block_table = layout(seq.seq_id).block_table
        segments = alloc.segments()
        if segments != self._segments:
            added, released = segment_changes(self._segments, segments)
            batch.segments_released.extend(released)
            batch.segments_added.extend(added)
            self._segments = segments

    def _take_copies(self, batch: Batch) -> int:
        """Move the copies the allocator decided into the batch, each host copy placed among
        the block copies; return the tokens brought back from the host tier."""
        alloc = self.allocator
        before = len(batch.block_copies)
        batch.block_copies.extend(alloc.take_block_copies())
        restored = 0
        for copy in alloc.take_host_copies():
            batch.host_copies.append(
                dataclasses.replace(copy, copies_before=before + copy.copies_before))
            tokens = len(copy.units) * alloc.block_size
            if copy.to_host:
                batch.host_offload_tokens += tokens
            else:
                batch.host_restore_tokens += tokens
                restored += tokens
        return restored

    def _schedule_running(
        self, batch: Batch, budget: int, *, prefills: bool = True, decodes: bool = True
    ) -> int:
        """Next prefill chunk (with prefills) or one decode token per sample (with decodes) for
        every running request, in admission order; returns the token budget left."""
        chunked = self.config.chunked_prefill
        seqs, scheduled, running = batch.seqs, self._scheduled, self.running
        extend = self.allocator.extend
        decode_tokens = decode_context = longest = 0
        i = 0
        while i < len(running):
            g = running[i]
            i += 1
            if g.computed < g.target:
                if not prefills:
                    continue
                todo = g.target - g.computed
                chunk = min(todo, budget) if chunked else (todo if todo <= budget else 0)
                if chunk:
                    self._add_prefill(batch, g, chunk)
                    budget -= chunk
                continue
            if not decodes or budget < g.n:
                continue
            # Slots per sample: one, or a speculative request's drafts and last token.
            step = 1 if g.decoding is None else g.decoding.step_tokens(g, budget)
            if g.num_live == g.n:
                try:  # the common case: every sample grows by one token
                    for sid in g.seq_ids:
                        extend(sid, step)
                    grown = True
                except OutOfKVMemory:
                    grown = False
            else:
                grown = False
            if not grown and not self._grow(g, batch, step):
                break  # g was the latest admitted and went itself
            g.kv_len += step
            ctx = g.kv_len
            for sid in g.seq_ids:
                seqs.append(ScheduledSeq(sid, g.rid, step, ctx, False, True))
            if step > 1:
                batch.add_drafts(g.n, step - 1, ctx - step + 1)
            keys = attended_keys(ctx, self.window)
            decode_tokens += g.n * step
            decode_context += g.n * keys
            if keys > longest:
                longest = keys
            scheduled.append((g, 0))
            budget -= g.n * step
        batch.decode_tokens += decode_tokens
        batch.decode_context_tokens += decode_context
        batch.decode_max_context = max(batch.decode_max_context, longest)
        return budget

    def _add_prefill(self, batch: Batch, g: Group, chunk: int) -> None:
        """Schedule g's next prefill chunk; the one that ends the prefill samples a token,
        unless the response failed (no output: the request ends with its prefill). Its KV is
        written this step (a scheduled chunk is never preempted before it runs: victims come
        later in admission order), so the prefix cache may share it from now on."""
        samples = g.computed + chunk == g.target and g.output > 0
        batch.add_prefill(g.seq_ids[0], g.rid, g.computed, chunk, samples=samples,
                          window=self.window)
        self.allocator.written(g.seq_ids[0], g.computed + chunk)
        self._scheduled.append((g, chunk))

    def _grow(self, g: Group, batch: Batch, step: int = 1) -> bool:
        """Fork g's samples (or beams) if due and give every sample step more slots, preempting
        later requests while memory runs short. False when g itself had to go."""
        alloc = self.allocator
        while g.num_live < g.n:
            child = g.seq_ids[g.num_live]
            parent = g.seq_ids[0] if g.decoding is None else g.decoding.parent_of(g, child)
            try:
                alloc.fork(parent, child)
            except OutOfKVMemory:
                if not self._make_room(g, batch):
                    return False
                continue
            batch.forks.append(Fork(parent, child))
            g.num_live += 1
            if g.decoding is None or not g.fork_len:  # beams share at least the prompt
                g.fork_len = g.kv_len
        for sid in g.seq_ids:
            # A sample extended before a failure is not extended again.
            while alloc.length(sid) == g.kv_len:
                try:
                    alloc.extend(sid, step)
                except OutOfKVMemory:
                    if not self._make_room(g, batch):
                        return False
        return True

    def _admit(self, batch: Batch, budget: int, now: float) -> None:
        """Admit waiting requests in queue order: allocate the whole prefill target (prefix
        hits included) and schedule its first chunk. The target's KV is pending until its
        chunks are scheduled: a request preempted midway leaves no prefix-cache entry over KV
        that was never written."""
        cfg = self.config
        while self.waiting and budget > 0 and not self._blocked:
            g = self.waiting[0]
            if self.num_running_seqs + g.n > cfg.max_num_seqs:
                return
            if not cfg.chunked_prefill and g.target > budget:
                return
            sid = g.seq_ids[0]
            try:
                hit = self.allocator.allocate(
                    sid,
                    g.target,
                    final_tokens=g.final_tokens,
                    prefix_hashes=g.prefix_hashes,
                    chunk_tokens=self.chunk_tokens,
                    prompt_tokens=g.prompt,  # a recompute's target runs past it
                    pending=True,
                )
            except OutOfKVMemory as exc:
                if self.running:
                    self._blocked = True
                    return
                self.waiting.popleft()
                self.events.rejected(g.rid, f"does not fit in an empty KV cache: {exc}")
                continue
            self.waiting.popleft()
            restored = self._take_copies(batch)  # the hit's tail may come from the host tier
            g.num_live = 1
            g.kv_len = g.target
            g.computed = min(hit, g.target - 1)  # the last token is recomputed for its logits
            self.events.admitted(g.rid, now, g.computed, max(0, g.computed - (hit - restored)))
            self.running.append(g)
            self.num_running_seqs += g.n
            chunk = min(g.target - g.computed, budget)
            self._add_prefill(batch, g, chunk)
            budget -= chunk

    def complete(self, end: float) -> None:
        """The step ended at `end`: advance prefills, count sampled tokens, finish requests."""
        done = False
        events = self.events
        for g, chunk in self._scheduled:
            if chunk:
                g.computed += chunk
                if g.computed < g.target:
                    continue
                if g.output == 0:  # a failed response: prefill only
                    self._finish(g, end)
                    done = True
                    continue
            if chunk or g.decoding is None:
                g.generated += 1
            else:  # what beams or drafts make of the step, and of memory
                g.generated += g.decoding.after_decode(
                    g, self.allocator, self._next.finished, self._next.truncated
                )
            if not g.first_token_done:
                g.first_token_done = True
                events.first_token(g.rid, end)
            if g.generated >= g.output:
                self._finish(g, end)
                done = True
        if done:
            self.running = [g for g in self.running if g.num_live]
        self._scheduled = []
        if self.window is not None:
            for g in self.running:
                self._slide(g, g.computed if g.in_prefill else g.kv_len)

    def _slide(self, g: Group, position: int) -> None:
        """Move g's window to where the query at `position` (the first its next step computes)
        starts reading; its samples' tokens before that are never read again."""
        start = position + 1 - self.window
        if start > g.kv_start:
            for sid in g.live_seq_ids:
                self.allocator.slide(sid, start)
            g.kv_start = start

    def _finish(self, g: Group, end: float) -> None:
        """Free a finished request (complete() drops it from running afterwards)."""
        self._next.finished.extend(g.live_seq_ids)
        for sid in g.live_seq_ids:
            self.allocator.free(sid)
        g.num_live = 0
        self.num_running_seqs -= g.n
        self._blocked = False
        self.events.finished(g.rid, end)
