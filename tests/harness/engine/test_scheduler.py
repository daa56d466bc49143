"""The lifecycle a batch tells: every fork, swap, preemption and finish of a sequence, in an
order an executor holding real KV can follow without asking the allocator or the scheduler."""
from __future__ import annotations

import numpy as np
import pytest

from harness.engine.loop import Engine
from harness.engine.executor import Batch, CostModelExecutor

SWAP_SPACE = 2000 * 131072  # bytes: 2,000 tokens of llama3-8b KV


class _Lifecycle:
    """Follows each sequence through the batches alone and fails on an event about a sequence
    in the wrong state; after each batch's events, the sequences it holds as resident must be
    exactly those the allocator knows."""

    name = "lifecycle"
    device = None

    def __init__(self, config, allocator):
        self.inner = CostModelExecutor(config, allocator)
        self.allocator = allocator
        self.state: dict[int, str] = {}
        self.batches: list[Batch] = []

    def _move(self, sid: int, before: tuple, after: str) -> None:
        assert self.state.get(sid) in before, f"seq {sid}: {self.state.get(sid)} -> {after}"
        self.state[sid] = after

    def step(self, batch: Batch) -> float:
        self.batches.append(batch)
        for parent, child in batch.forks:
            assert self.state.get(parent) == "resident"
            self._move(child, (None, "recompute"), "resident")
        for sid in batch.swapped_out:
            self._move(sid, ("resident",), "swapped")
        for sid, kept_tokens in batch.preempted:
            assert kept_tokens > 0
            self._move(sid, ("resident",), "recompute")
        for sid in batch.finished:
            self._move(sid, ("resident", "swapped"), "finished")
        for sid in batch.swapped_in:
            self._move(sid, ("swapped",), "resident")
        for seq in batch.seqs:
            if seq.is_prefill:
                self._move(seq.seq_id, (None, "recompute", "resident"), "resident")
            else:
                assert seq.samples and self.state.get(seq.seq_id) == "resident"
        for sid, state in self.state.items():
            try:
                self.allocator.length(sid)
                known = True
            except ValueError:
                known = False
            assert known == (state == "resident"), f"seq {sid} is {state}"
        return self.inner.step(batch)


def test_a_request_that_preempts_itself_after_forking_keeps_its_forks(tiny_config, make_trace):
    # B (n = 2) forks its child, then copy-on-write of the shared partial block finds no free
    # block and B, the latest admitted, swaps itself out: the child it swaps out (and later
    # restores) must be one the batch told of.
    trace = make_trace([40, 40], [30, 10], n=[1, 2])
    config = tiny_config("paged", slots=96, preemption="swap", swap_space_bytes=SWAP_SPACE)
    engine = Engine(config, trace, executor_factory=_Lifecycle)
    result = engine.run()
    assert (result.requests.status == "completed").all()
    batches = engine.executor.batches
    first = next(b for b in batches if b.swapped_out)
    assert first.forks == [(1, 2)] and first.swapped_out == [1, 2]
    assert any(b.swapped_in == [1, 2] for b in batches)
    assert engine.executor.state[0] == "finished"  # B's own finish has no batch after it


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
@pytest.mark.parametrize("allocator", ["static", "paged", "hybrid"])
def test_batches_tell_every_sequence_event_in_order(tiny_config, random_trace, allocator,
                                                    preemption):
    trace = random_trace(np.random.default_rng(3), 40, max_output=120, max_n=3)
    config = tiny_config(allocator, slots=1024, preemption=preemption, swap_space_bytes=SWAP_SPACE)
    engine = Engine(config, trace, executor_factory=_Lifecycle)
    result = engine.run()
    assert result.summary["preemptions"] > 0
    batches = engine.executor.batches
    assert any(b.swapped_out for b in batches) == (preemption == "swap")
    assert any(b.preempted for b in batches) or preemption == "swap"


def test_only_the_chunk_that_ends_a_prefill_samples(tiny_config, make_trace):
    trace = make_trace([100, 30], [5, 0], arrivals=[0.0, 1.0])
    config = tiny_config("paged", max_num_batched_tokens=64, max_num_seqs=4)
    engine = Engine(config, trace, executor_factory=_Lifecycle)
    engine.run()
    prefills = [(s.seq_id, s.context_tokens, s.samples)
                for b in engine.executor.batches for s in b.seqs if s.is_prefill]
    assert prefills == [(0, 64, False), (0, 100, True), (1, 30, False)]  # 1: a failed response
