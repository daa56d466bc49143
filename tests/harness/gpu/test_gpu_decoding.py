"""Beam search, parallel sampling and speculative decoding through the GPU executor at the tiny
shape: on every allocator, under preemption, every request completes and every sequence's tokens
are plain greedy decoding's (beams fork and free sequences every step and copy shared blocks on
write; a verification drafts, samples every drafted position and is rolled back)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from harness.model.config import AllocatorConfig, RunConfig, SchedulerConfig  # noqa: E402
from harness.gpu.run import run_on_device  # noqa: E402
from harness.model.presets import model_preset  # noqa: E402
from workloads.transforms import set_decoding  # noqa: E402

ALLOCATORS = {
    "static": {},
    "paged": {"block_size": 4},
    "segmented": {"segment_tokens": 64},
    "hybrid": {"block_size": 4, "segment_tokens": 64},
}
# KV budgets (slots) that preempt on the trace below; static reserves a range per sequence.
BUDGETS = {"static": 192, "paged": 128, "segmented": 128, "hybrid": 128}


def run(decoder, trace, allocator, preemption, budget):
    config = RunConfig(
        model=model_preset("tiny"),
        allocator=AllocatorConfig.of(allocator, **ALLOCATORS[allocator]),
        scheduler=SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=64,
                                  preemption=preemption),
        budget_slots_override=budget,
    )
    result, executor = run_on_device(config, trace, decoder)
    assert (result.requests.status == "completed").all()
    return result, executor


def assert_greedy(executor, plain):
    """Every sequence's tokens (beams freed early included) are the start of its request's plain
    greedy tokens, and some sequence of each request has all of them."""
    longest = dict.fromkeys(plain, 0)
    for sid, tokens in executor.outputs().items():
        rid = executor.request_of(sid)
        kept = tokens[: len(plain[rid])]
        assert kept == plain[rid][: len(kept)], f"seq {sid} of request {rid}"
        longest[rid] = max(longest[rid], len(kept))
    assert longest == {rid: len(want) for rid, want in plain.items()}


@pytest.fixture(scope="module")
def base_trace(small_trace):
    """Requests arriving at once: the schedule, preemptions included, does not depend on how
    long the steps take."""
    trace = small_trace(8, 10, n=[1, 2, 1, 1, 1, 3, 1, 1, 2, 1], max_prompt=30, max_output=24)
    trace["arrival_s"] = 0.0
    return trace


@pytest.fixture(scope="module")
def plain(tiny_decoder, base_trace):
    """Greedy tokens of each request decoded plainly, one sample each, memory to spare."""
    _, executor = run(tiny_decoder, set_decoding(base_trace, n=1), "paged", "recompute",
                      budget=4096)
    outputs = executor.outputs()
    return {rid: outputs[rid][:out] for rid, out in enumerate(base_trace.output_tokens)}


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
@pytest.mark.parametrize("allocator", list(ALLOCATORS))
def test_beam_search_keeps_greedy_tokens(tiny_decoder, base_trace, plain, allocator,
                                         preemption):
    trace = set_decoding(base_trace, n=1, beam_width=3)
    result, executor = run(tiny_decoder, trace, allocator, preemption, BUDGETS[allocator])
    if allocator != "segmented":  # its one-token pages are full once written: nothing to copy
        assert executor.details["copied_blocks"] > 0  # copy-on-write, or static's copies
    assert result.summary["preemptions"] > 0
    if preemption == "swap":
        assert executor.details["swapped_out_seqs"] > 0
    steps = result.steps
    if allocator != "static":
        assert (steps.live < steps.logical).any()  # beams share blocks
    assert len(executor.outputs()) > 3 * len(trace)  # beams were forked and freed
    assert_greedy(executor, plain)


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
@pytest.mark.parametrize("allocator", list(ALLOCATORS))
def test_speculative_decoding_gives_the_plain_greedy_tokens(tiny_decoder, base_trace, plain,
                                                            allocator, preemption):
    trace = set_decoding(base_trace, spec_tokens=3, spec_accept=0.6)
    result, executor = run(tiny_decoder, trace, allocator, preemption, BUDGETS[allocator])
    assert result.summary["preemptions"] > 0
    if preemption == "swap":
        assert executor.details["swapped_out_seqs"] > 0
    log = executor.step_log.frame()
    assert (log.verify_tokens > log.verify_seqs).any()  # verifications of several drafts
    assert log.rollback_s.gt(0).any()  # and rollbacks of rejected ones
    assert executor.details["draft_mismatches"] == 0
    assert_greedy(executor, plain)  # parallel samples included


def test_rejecting_every_draft_still_gives_greedy_tokens(tiny_decoder, base_trace, plain):
    trace = set_decoding(base_trace, n=1, spec_tokens=2, spec_accept=0.0)
    _, executor = run(tiny_decoder, trace, "paged", "recompute", budget=4096)
    assert_greedy(executor, plain)
