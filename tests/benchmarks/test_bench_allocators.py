"""Micro-benchmarks of the allocator hot paths, one row per allocator (default parameters).

Run with `python -m pytest tests/benchmarks/test_bench_allocators.py --benchmark-enable`; under
the default --benchmark-disable each benchmark body runs once, as a smoke test.
"""
from __future__ import annotations

from itertools import cycle

import pytest

from allocators import SPECS, make_allocator

RUNNING = 64  # decoding sequences in the batch
PROMPT_TOKENS = 1000
FINAL_TOKENS = 3072  # static reservations: 64 of them leave a quarter of the budget free
BUDGET = RUNNING * 4096
EXTEND_ROUNDS = 200  # each round extends every running sequence by one token


@pytest.fixture(params=tuple(SPECS))
def running(request):
    """An allocator with RUNNING sequences admitted and past their prefill.

    Prompt lengths are staggered so that every round of extends crosses a few block boundaries,
    as in a real batch, rather than all of them in one round out of block_size.
    """
    alloc = make_allocator(request.param, BUDGET)
    for seq_id in range(RUNNING):
        alloc.allocate(seq_id, PROMPT_TOKENS + seq_id, final_tokens=FINAL_TOKENS)
    return alloc


def test_allocate_free_1k(benchmark, running):
    def allocate_free():
        running.allocate(RUNNING, 1024, final_tokens=1024)
        running.free(RUNNING)

    benchmark(allocate_free)
    assert running.usage().logical == RUNNING * PROMPT_TOKENS + sum(range(RUNNING))


def test_extend_one_token(benchmark, running):
    """The decode hot path; the reported time is per extend (one iteration = one sequence)."""
    seq_ids = cycle(range(RUNNING))

    def extend_next():
        running.extend(next(seq_ids))

    benchmark.pedantic(extend_next, rounds=EXTEND_ROUNDS, iterations=RUNNING, warmup_rounds=1)
    assert running.usage().logical > RUNNING * PROMPT_TOKENS + sum(range(RUNNING))


def test_usage(benchmark, running):
    usage = benchmark(running.usage)
    assert usage.backed == usage.live + usage.reserved + usage.internal + usage.cached + usage.free


def test_extend_and_slide_one_token(benchmark, running):
    """The decode hot path under a sliding window: one token written, the window moved one
    token on (and a unit let go where one empties). Per sequence."""
    window = 512
    seq_ids = cycle(range(RUNNING))

    def extend_and_slide():
        seq_id = next(seq_ids)
        running.extend(seq_id)
        running.slide(seq_id, running.length(seq_id) + 1 - window)

    benchmark.pedantic(extend_and_slide, rounds=EXTEND_ROUNDS, iterations=RUNNING,
                       warmup_rounds=1)
    u = running.usage()
    assert u.live == u.logical and u.live + u.stale + u.reserved + u.internal + u.free == u.backed
