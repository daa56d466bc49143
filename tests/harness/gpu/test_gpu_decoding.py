"""Beam search and speculative decoding through the GPU executor at the tiny shape: every
allocator, under preemption, completes every request without an executor error (beams fork and
free sequences every step; verification writes several tokens and is rolled back)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from harness.model.config import AllocatorConfig, RunConfig, SchedulerConfig  # noqa: E402
from harness.gpu.run import run_on_device  # noqa: E402
from harness.model.presets import model_preset  # noqa: E402
from workloads.transforms import set_decoding  # noqa: E402

ALLOCATORS = {
    "static": ({}, 400),
    "paged": ({"block_size": 4}, 160),
    "segmented": ({"segment_tokens": 64}, 160),
    "hybrid": ({"block_size": 4, "segment_tokens": 64}, 160),
}


def run(decoder, trace, allocator, preemption):
    params, budget = ALLOCATORS[allocator]
    config = RunConfig(
        model=model_preset("tiny"),
        allocator=AllocatorConfig.of(allocator, **params),
        scheduler=SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=48,
                                  preemption=preemption),
        budget_slots_override=budget,
    )
    result, executor = run_on_device(config, trace, decoder)
    assert (result.requests.status == "completed").all()
    return result, executor


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
@pytest.mark.parametrize("allocator", list(ALLOCATORS))
def test_beam_search_runs_on_the_executor(tiny_decoder, small_trace, allocator, preemption):
    trace = set_decoding(small_trace(7, 5, max_prompt=30, max_output=12), beam_width=3)
    result, executor = run(tiny_decoder, trace, allocator, preemption)
    if allocator != "segmented":  # its one-token pages are full once written: nothing to copy
        assert executor.details["copied_blocks"] > 0  # copy-on-write, or static's copies
    steps = result.steps
    if allocator != "static":
        assert (steps.live < steps.logical).any()  # beams share blocks


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
@pytest.mark.parametrize("allocator", list(ALLOCATORS))
def test_speculative_decoding_runs_on_the_executor(tiny_decoder, small_trace, allocator,
                                                   preemption):
    trace = set_decoding(small_trace(8, 6, n=[1, 2, 1, 1, 1, 1], max_prompt=30, max_output=16),
                         spec_tokens=3, spec_accept=0.6)
    result, executor = run(tiny_decoder, trace, allocator, preemption)
    outputs = executor.outputs()
    for rid, length in enumerate(trace.output_tokens.tolist()):
        assert len(outputs[rid]) >= length  # every token sampled, drafts rolled back
    steps = result.steps
    assert (steps.decode_tokens > steps.running).any()  # verifications of several tokens
