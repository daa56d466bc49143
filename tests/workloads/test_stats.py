"""Trace statistics on small traces whose figures can be checked by hand."""
from __future__ import annotations

import math

import numpy as np

from workloads import Fixed, Poisson, WorkloadSpec, describe, generate
from workloads.trace import make_trace


def _trace(prompts, outputs, hashes=None, arrivals=None, failed=None):
    rows = len(prompts)
    return make_trace(
        arrival_s=np.asarray(arrivals if arrivals is not None else np.arange(rows), dtype=float),
        prompt_tokens=np.asarray(prompts), output_tokens=np.asarray(outputs),
        n=np.ones(rows, dtype=np.int64), prefix_hashes=hashes,
        failed=np.asarray(failed if failed is not None else [False] * rows),
        attrs={"name": "t", "source": "test", "format": "synthetic", "chunk_tokens": 4 if hashes else 0},
    )


def test_lengths_span_and_rate():
    stats = describe(_trace([1, 2, 3, 4, 100], [5, 0, 5, 5, 5], failed=[False, True, False, False, False]))
    assert stats.rows == 5 and stats.span_s == 4.0 and stats.rate_per_s == 1.25
    assert (stats.prompt.mean, stats.prompt.median, stats.prompt.max, stats.prompt.min) == (22, 3, 100, 1)
    assert stats.prompt.p99 == np.percentile([1, 2, 3, 4, 100], 99)
    assert stats.failed == 1
    assert stats.prefix is None


def test_prefix_reuse_counts_references_against_distinct_hashes():
    stats = describe(_trace([8, 8, 12], [1, 1, 1], hashes=[(0, 1), (0, 2), (0, 1, 3)]))
    assert (stats.prefix.references, stats.prefix.distinct, stats.prefix.chunk_tokens) == (7, 4, 4)
    assert math.isclose(stats.prefix.reusable, 3 / 7)


def test_one_instant_has_no_rate():
    stats = describe(_trace([5, 5], [5, 5], arrivals=[0.0, 0.0]))
    assert stats.span_s == 0.0 and math.isnan(stats.rate_per_s)


def test_generated_trace_reuse_matches_its_construction():
    trace = generate(WorkloadSpec(10, prompt_tokens=Fixed(64), system_prompt_tokens=128,
                                  chunk_tokens=64, arrivals=Poisson(1.0)))
    prefix = describe(trace).prefix
    # Each request: the 2 shared system chunks and 1 chunk of its own.
    assert (prefix.references, prefix.distinct) == (30, 12)
