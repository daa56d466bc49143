"""Decode runs: stretches of steps that can only decode every running sample by one token.

On long traces most steps are such steps. The scheduler knows a run in advance (nothing in
prefill, to fork or swapped, no beam search or speculative decoding, nobody admissible, nobody finishing before its last step, memory for
all of it), so the engine can take it without calling schedule() each step: every sequence grows
by one slot per step, and an executor that prices steps in bulk prices them together. Both
executors take this path; it must give exactly the results of scheduling every step (a property
test runs both ways).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.engine.batch import Batch, ScheduledSeq, attended_keys_array


@dataclass(frozen=True)
class DecodeRun:
    """Steps that can only decode every running sample by one token (see decode_run)."""

    seq_ids: list[int]  # every running sequence, in scheduling order
    decode_tokens: int  # tokens per step: one per sequence
    context_tokens: int  # KV tokens the first step holds; each next step holds decode_tokens more
    max_context: int  # the longest sequence's KV tokens in the first step; one more each step
    steps: int
    # Under a sliding window: each sequence's context in the first step, and the window that
    # caps what each step reads of it.
    contexts: np.ndarray | None = None
    window: int | None = None

    def attended(self, done):
        """Keys the steps done (an int, or an array of them) read in all; without a window,
        the context the run holds then."""
        if self.window is None:
            return self.context_tokens + self.decode_tokens * done
        keys = attended_keys_array(self.contexts + np.asarray(done)[..., None], self.window)
        return keys.sum(axis=-1)

    def longest(self, done):
        """Keys the longest sequence reads in the steps done (an int, or an array of them)."""
        return attended_keys_array(self.max_context + np.asarray(done), self.window)


class DecodeRuns:
    """The Scheduler's decode-run methods (a mixin: they read the scheduler's queues)."""

    def decode_run(self) -> DecodeRun | None:
        """The next steps, when each of them can only decode every running sample by one token:
        nothing in prefill, to fork or swapped, nothing admissible, no request finishing before
        the last of them (that step goes through schedule()), and memory for all of them."""
        running = self.running
        if self.swapped or not running or not self._admission_blocked():
            return None
        steps = 1 << 62
        for g in running:
            if g.computed < g.target or g.num_live != g.n or g.decoding is not None:
                return None
            if g.output - g.generated < steps:
                steps = g.output - g.generated
        decode_tokens = self.num_running_seqs
        steps = min(steps - 1, self._growth_room(decode_tokens))
        if steps < 1:
            return None
        seq_ids = [sid for g in running for sid in g.seq_ids]
        context = sum(g.n * (g.kv_len + 1) for g in running)
        longest = max(g.kv_len for g in running) + 1
        if self.window is None:
            return DecodeRun(seq_ids, decode_tokens, context, longest, steps)
        contexts = np.repeat([g.kv_len + 1 for g in running], [g.n for g in running])
        return DecodeRun(seq_ids, decode_tokens, context, longest, steps, contexts, self.window)

    def _admission_blocked(self) -> bool:
        """Whether _admit, after this step's decodes, would admit nobody (its loop conditions)."""
        if not self.waiting:
            return True
        cfg = self.config
        budget = self.policy.admission_budget(self.num_running_seqs)
        head = self.waiting[0]
        return (
            budget <= 0
            or self._blocked
            or self.num_running_seqs + head.n > cfg.max_num_seqs
            or (not cfg.chunked_prefill and head.target > budget)
        )

    def _growth_room(self, num_seqs: int) -> int:
        """Decode steps every sequence can surely take: the slots an allocation can still get
        (free, evictable, not yet backed) cover a new unit per block_size tokens per sequence,
        plus a partial and a copied-on-write unit each. With a host tier an eviction copies KV
        to the host, which a step's price must see, so evictable slots do not count."""
        alloc = self.allocator
        usage = alloc.usage()
        unit = alloc.block_size
        evictable = 0 if alloc.host_tier_blocks else usage.cached
        room = usage.free + evictable + max(0, usage.budget - usage.backed - unit)
        return room // num_seqs - 2 * unit

    def decode_step(self, run: DecodeRun, done: int, *, build: bool) -> Batch | None:
        """Step done + 1 of a decode run: every sequence grows by one slot. With build, the
        step's batch too, the one schedule() would make (an executor that prices decode runs
        in bulk needs none)."""
        if done and self.window is not None:  # the window after the step before
            for g in self.running:
                self._slide(g, g.kv_len + done)
        extend = self.allocator.extend
        for sid in run.seq_ids:
            extend(sid, 1)
        if not build:
            return None
        batch, self._next = self._next, Batch()  # it carries the events since the last batch
        batch.decode_tokens = run.decode_tokens
        batch.decode_context_tokens = int(run.attended(done))
        batch.decode_max_context = int(run.longest(done))
        for g in self.running:
            ctx = g.kv_len + 1 + done
            for sid in g.seq_ids:
                batch.seqs.append(ScheduledSeq(sid, g.rid, 1, ctx, False, True))
        self._hand_over_memory(batch)
        return batch

    def end_decode_run(self, steps: int) -> None:
        """steps steps of a decode run are over: every sample sampled that many tokens."""
        for g in self.running:
            g.kv_len += steps
            g.generated += steps
            if self.window is not None:
                self._slide(g, g.kv_len)

