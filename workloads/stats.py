"""What a trace holds: size, time span, rate, length distributions and prefix reuse.

Percentiles use numpy's default (linear interpolation), the convention of the figures in
workloads/data/README.md. Prefix reuse counts hash references against distinct hashes: with
Mooncake's position-dependent block ids, every reference beyond the first to a block could be
served from a prefix cache of unbounded size.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class LengthStats:
    """Distribution of one token-count column."""

    mean: float
    median: float
    p99: float
    max: int
    min: int

    @classmethod
    def of(cls, values: np.ndarray) -> LengthStats:
        if not len(values):
            return cls(np.nan, np.nan, np.nan, 0, 0)
        return cls(
            float(values.mean()),
            float(np.median(values)),
            float(np.percentile(values, 99)),
            int(values.max()),
            int(values.min()),
        )


@dataclass(frozen=True)
class PrefixReuse:
    """Prefix-hash references against distinct hashes."""

    references: int
    distinct: int
    chunk_tokens: int

    @property
    def reusable(self) -> float:
        """Share of references that repeat an earlier one."""
        return 1.0 - self.distinct / self.references if self.references else 0.0


@dataclass(frozen=True)
class TraceStats:
    """The summary `kvharness trace info` prints."""

    rows: int
    span_s: float
    rate_per_s: float  # rows / span_s; NaN when all requests arrive at once
    prompt: LengthStats
    output: LengthStats
    failed: int
    prefix: PrefixReuse | None  # None when the trace has no prefix hashes


def describe(trace: pd.DataFrame) -> TraceStats:
    """Summary statistics of a canonical trace."""
    rows = len(trace)
    span_s = float(trace["arrival_s"].iloc[-1]) if rows else 0.0
    return TraceStats(
        rows=rows,
        span_s=span_s,
        rate_per_s=rows / span_s if span_s > 0 else float("nan"),
        prompt=LengthStats.of(trace["prompt_tokens"].to_numpy()),
        output=LengthStats.of(trace["output_tokens"].to_numpy()),
        failed=int(trace["failed"].sum()),
        prefix=_prefix_reuse(trace),
    )


def _prefix_reuse(trace: pd.DataFrame) -> PrefixReuse | None:
    hashes = [h for h in trace["prefix_hashes"].tolist() if h is not None]
    if not hashes:
        return None
    ids = np.fromiter(chain.from_iterable(hashes), dtype=np.int64)
    return PrefixReuse(len(ids), len(np.unique(ids)), int(trace.attrs.get("chunk_tokens", 0)))
