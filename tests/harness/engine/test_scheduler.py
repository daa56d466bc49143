"""The lifecycle a batch tells: every fork, swap, preemption and finish of a sequence, in an
order an executor holding real KV can follow without asking the allocator or the scheduler."""
from __future__ import annotations

import numpy as np
import pytest

from harness.engine.batch import Batch, Fork
from harness.engine.executor import CostModelExecutor
from harness.engine.loop import Engine

SWAP_SPACE = 2000 * 131072  # bytes: 2,000 tokens of llama3-8b KV


class _Lifecycle:
    """Follows each sequence through the batches alone and fails on an event about a sequence
    in the wrong state; after each batch's events, the sequences it holds as resident must be
    exactly those the allocator knows, with the block tables the batch gives."""

    name = "lifecycle"
    device = None
    needs_layouts = True

    def __init__(self, config, geometry):
        self.inner = CostModelExecutor(config, geometry)
        self.allocator = None  # the engine's, set by the test: to check the batches against
        self.state: dict[int, str] = {}
        self.batches: list[Batch] = []

    def _move(self, sid: int, before: tuple, after: str) -> None:
        assert self.state.get(sid) in before, f"seq {sid}: {self.state.get(sid)} -> {after}"
        self.state[sid] = after

    def step(self, batch: Batch) -> float:
        self.batches.append(batch)
        for fork in batch.forks:
            assert self.state.get(fork.parent) == "resident"
            self._move(fork.child, (None, "recompute"), "resident")
        for op in batch.swap_out:
            self._move(op.seq_id, ("resident",), "swapped")
        for preemption in batch.preempted:
            assert preemption.kept_tokens > 0
            self._move(preemption.seq_id, ("resident",), "recompute")
        for sid in batch.finished:
            self._move(sid, ("resident", "swapped"), "finished")
        for op in batch.swap_in:
            self._move(op.seq_id, ("swapped",), "resident")
            assert op.block_table == self.allocator.layout(op.seq_id).block_table
        for seq in batch.seqs:
            if seq.is_prefill:
                self._move(seq.seq_id, (None, "recompute", "resident"), "resident")
            else:
                assert seq.samples and self.state.get(seq.seq_id) == "resident"
            assert seq.block_table == self.allocator.layout(seq.seq_id).block_table
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
    engine.executor.allocator = engine.allocator
    result = engine.run()
    assert (result.requests.status == "completed").all()
    batches = engine.executor.batches
    first = next(b for b in batches if b.swap_out)
    assert first.forks == [Fork(1, 2)] and [op.seq_id for op in first.swap_out] == [1, 2]
    assert any([op.seq_id for op in b.swap_in] == [1, 2] for b in batches)
    assert engine.executor.state[0] == "finished"  # B's own finish has no batch after it


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
@pytest.mark.parametrize("allocator", ["static", "paged", "hybrid"])
def test_batches_tell_every_sequence_event_in_order(tiny_config, random_trace, allocator,
                                                    preemption):
    trace = random_trace(np.random.default_rng(3), 40, max_output=120, max_n=3)
    config = tiny_config(allocator, slots=1024, preemption=preemption, swap_space_bytes=SWAP_SPACE)
    engine = Engine(config, trace, executor_factory=_Lifecycle)
    engine.executor.allocator = engine.allocator
    result = engine.run()
    assert result.summary["preemptions"] > 0
    batches = engine.executor.batches
    assert any(b.swap_out for b in batches) == (preemption == "swap")
    assert any(b.preempted for b in batches) or preemption == "swap"


def test_only_the_chunk_that_ends_a_prefill_samples(tiny_config, make_trace):
    trace = make_trace([100, 30], [5, 0], arrivals=[0.0, 1.0])
    config = tiny_config("paged", max_num_batched_tokens=64, max_num_seqs=4)
    engine = Engine(config, trace, executor_factory=_Lifecycle)
    engine.executor.allocator = engine.allocator
    engine.run()
    prefills = [(s.seq_id, s.context_tokens, s.samples)
                for b in engine.executor.batches for s in b.seqs if s.is_prefill]
    assert prefills == [(0, 64, False), (0, 100, True), (1, 30, False)]  # 1: a failed response
