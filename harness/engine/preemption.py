"""The scheduler's preemption and swap-in (harness.engine.scheduler): when a running request
cannot grow, the latest admitted one is preempted, by recompute (its KV dropped, the request
queued again) or by swap (its KV moved to the host swap space, when the run swaps, the request
is past its prefill and the space holds it), or, alone in the cache, rejected; swapped requests
come back oldest first while memory and sequence slots last.
"""
from __future__ import annotations

from harness.engine.batch import Batch, Preemption, SwapOp
from harness.engine.sequences import Group
from harness.engine.swap import restore


class Preempting:
    """The Scheduler's preemption and swap-in methods (a mixin: they move requests between the
    scheduler's running, waiting and swapped queues)."""

    def _make_room(self, g: Group, batch: Batch) -> bool:
        """Preempt the latest admitted request. When that is g, g goes (or, alone, is rejected:
        a request that cannot grow in an otherwise empty cache never will). Forks g made in
        this step stay in the batch: its children exist until they are freed or swapped."""
        victim = self.running[-1]
        if victim is not g:
            self._preempt(victim, batch)
            return True
        if len(self.running) == 1:
            batch.finished.extend(g.live_seq_ids)
            self._release(g)
            self.events.rejected(
                g.rid, f"outgrew the KV budget at {g.kv_len} tokens x {g.num_live} samples"
            )
        else:
            self._preempt(g, batch)
        return False

    def _release(self, g: Group) -> None:
        """Free g's sequences and drop it from running (it is always the last)."""
        for sid in g.live_seq_ids:
            self.allocator.free(sid)
        self.running.pop()  # g is the last: a victim, or a request that cannot grow
        self.num_running_seqs -= g.n
        self._blocked = False

    def _preempt(self, g: Group, batch: Batch) -> None:
        self._preempted = True
        self.events.preempted(g.rid)
        tokens = g.swap_tokens()
        swap = self.config.preemption == "swap" and not g.in_prefill and self.swap.fits(tokens)
        seq_ids = g.live_seq_ids
        if swap:
            # Copies decided so far (a fork of g this step) come before its KV is read.
            self._take_copies(batch)
            before = len(batch.block_copies)
            batch.swap_out.extend(self._swap_op(sid, g.kv_len, g.kv_start, before)
                                  for sid in seq_ids)
        self._release(g)
        if swap:
            self.swap.put(tokens)
            batch.swap_out_tokens += tokens
            self.swapped.append(g)
        else:  # recompute, also when the swap space is full or the request is in prefill
            g.reset_for_recompute()
            batch.preempted.extend(Preemption(sid, g.target) for sid in seq_ids)
            self.policy.requeue(self.waiting, g)

    def _swap_op(self, seq_id: int, written: int, first: int, copies_before: int = 0) -> SwapOp:
        """The move of a sequence's written KV from its window start on (a sample grown before
        its request was preempted in the same step holds one more slot, not yet written)."""
        return SwapOp(seq_id, written, self.allocator.layout(seq_id).block_table, copies_before,
                      first)

    def _swap_in(self, batch: Batch) -> None:
        """Bring swapped requests back, oldest first, while memory and sequence slots last."""
        while self.swapped and not self._blocked:
            g = self.swapped[0]
            if self.num_running_seqs + g.n > self.config.max_num_seqs:
                return
            restored = restore(self.allocator, g)
            if not restored and self.running:
                self._blocked = True
                return
            self.swapped.popleft()
            tokens = g.swap_tokens()
            self.swap.take(tokens)
            if not restored:
                batch.finished.extend(g.live_seq_ids)
                self.events.rejected(g.rid, "its swapped KV does not fit in an empty cache")
                continue
            batch.swap_in_tokens += tokens
            batch.swap_in.extend(self._swap_op(sid, g.kv_len, g.kv_start)
                                 for sid in g.live_seq_ids)
            self.running.append(g)
            self.num_running_seqs += g.n
