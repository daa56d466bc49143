"""Beam search and speculative decoding in the simulation: every request completes with its
output tokens, memory follows the pattern, runs are deterministic, batches match the allocator."""
from __future__ import annotations

import numpy as np
import pytest

from harness.engine.batch import Batch
from harness.engine.decoding import BeamSearch
from harness.engine.loop import Engine, simulate
from workloads.transforms import set_decoding

ALLOCATORS = ["static", "paged", "segmented", "hybrid"]


class _Checking:
    """Checks every batch against the allocator: verifications write several tokens."""

    name = "checking"
    device = None
    needs_layouts = True

    def __init__(self, config, geometry):
        self.allocator = None

    def step(self, batch: Batch) -> float:
        for seq in batch.seqs:
            length = self.allocator.length(seq.seq_id)
            assert seq.context_tokens <= length if seq.is_prefill else seq.context_tokens == length
            assert seq.block_table == self.allocator.layout(seq.seq_id).block_table
        return 0.01


def _run(config, trace, **kwargs):
    engine = Engine(config, trace, executor_factory=_Checking, **kwargs)
    engine.executor.allocator = engine.allocator
    return engine.run()


def test_beam_continuations_sum_to_the_width():
    beam = BeamSearch(5, np.random.default_rng(0), iter(range(100)))
    counts = [len(scores) for scores in beam.continuations()]
    assert sum(counts) == 5 and len(counts) == 5


@pytest.mark.parametrize("allocator", ALLOCATORS)
@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_beam_search_completes_and_shares(tiny_config, random_trace, allocator, preemption):
    trace = set_decoding(random_trace(np.random.default_rng(1), 30, max_output=80), beam_width=4)
    config = tiny_config(allocator, slots=3000, preemption=preemption,
                         swap_space_bytes=2000 * 131072)
    result = _run(config, trace)
    assert (result.requests.status == "completed").all()
    steps = result.steps
    if allocator == "static":
        assert (steps.live == steps.logical).all()  # nothing is shared: forks copy
    else:
        assert (steps.live < steps.logical).any()
    again = _run(config, trace)
    assert again.steps.equals(result.steps)


@pytest.mark.parametrize("allocator", ALLOCATORS)
@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_speculative_decoding_completes_in_fewer_steps(tiny_config, random_trace, allocator,
                                                       preemption):
    base = random_trace(np.random.default_rng(2), 30, max_output=80, max_n=2)
    config = tiny_config(allocator, slots=3000, preemption=preemption,
                         swap_space_bytes=2000 * 131072)
    plain = simulate(config, base)
    spec = _run(config, set_decoding(base, spec_tokens=4, spec_accept=0.9))
    assert (spec.requests.status == "completed").all()
    assert spec.summary["output_tokens"] == plain.summary["output_tokens"]
    assert len(spec.steps) < len(plain.steps)


def test_rejecting_every_draft_decodes_one_token_a_step(tiny_config, random_trace):
    base = random_trace(np.random.default_rng(3), 10, max_output=40)
    config = tiny_config("paged", slots=8192)
    plain = simulate(config, base, decode_runs=False)
    spec = simulate(config, set_decoding(base, spec_tokens=3, spec_accept=0.0))
    assert spec.summary["output_tokens"] == plain.summary["output_tokens"]
    assert len(spec.steps) >= base.output_tokens.max()  # a token a step at most
    assert spec.steps.step_ms.mean() > plain.steps.step_ms.mean()  # drafting costs
    assert spec.info["executor_details"]["draft_model"] == "llama3.2-1b"


def test_speculative_rollback_leaves_no_extra_memory(tiny_config, random_trace):
    base = random_trace(np.random.default_rng(4), 10, max_output=40)
    config = tiny_config("segmented", slots=8192)
    plain = simulate(config, base, decode_runs=False)
    spec = simulate(config, set_decoding(base, spec_tokens=3, spec_accept=0.0))
    # Between steps each sequence holds its tokens: the same live memory as plain decoding.
    assert spec.steps.live.max() <= plain.steps.live.max() + 3 * spec.steps.running.max()
