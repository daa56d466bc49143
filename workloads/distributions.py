"""Seeded random pieces of a synthetic workload: arrival processes and token-length distributions.

Each is a frozen dataclass with one sampling method taking a numpy Generator, so a WorkloadSpec
that holds them is hashable and fully describes what it generates.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workloads.load import load_trace


@dataclass(frozen=True)
class Poisson:
    """Arrivals at rate_per_s with exponential gaps."""

    rate_per_s: float

    def __post_init__(self) -> None:
        _positive("rate_per_s", self.rate_per_s)

    def times(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """count arrival times in seconds, the first at 0.0."""
        gaps = rng.exponential(1.0 / self.rate_per_s, size=max(count - 1, 0))
        return np.concatenate(([0.0], np.cumsum(gaps)))[:count]


@dataclass(frozen=True)
class Gamma:
    """Arrivals at rate_per_s with gamma gaps of coefficient of variation cv: 1 is Poisson,
    above 1 bursty (requests bunch up, then pause), below 1 more regular."""

    rate_per_s: float
    cv: float

    def __post_init__(self) -> None:
        _positive("rate_per_s", self.rate_per_s)
        _positive("cv", self.cv)

    def times(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """count arrival times in seconds, the first at 0.0."""
        shape = 1.0 / self.cv**2
        gaps = rng.gamma(shape, 1.0 / (self.rate_per_s * shape), size=max(count - 1, 0))
        return np.concatenate(([0.0], np.cumsum(gaps)))[:count]


@dataclass(frozen=True)
class Fixed:
    """Always the same number of tokens."""

    tokens: int

    def __post_init__(self) -> None:
        _at_least_one("tokens", self.tokens)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.full(size, self.tokens, dtype=np.int64)


@dataclass(frozen=True)
class Uniform:
    """Uniform over low..high tokens, both included."""

    low: int
    high: int

    def __post_init__(self) -> None:
        _at_least_one("low", self.low)
        if self.high < self.low:
            raise ValueError(f"high must be >= low, got {self.low}..{self.high}")

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.integers(self.low, self.high, size=size, endpoint=True, dtype=np.int64)


@dataclass(frozen=True)
class LogNormal:
    """Log-normal tokens with the given median and sigma (of the log), rounded and clipped to
    low..high; the usual shape of real prompt and output lengths."""

    median: float
    sigma: float
    low: int = 1
    high: int | None = None

    def __post_init__(self) -> None:
        _positive("median", self.median)
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        _at_least_one("low", self.low)
        if self.high is not None and self.high < self.low:
            raise ValueError(f"high must be >= low, got {self.low}..{self.high}")

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        values = np.rint(rng.lognormal(np.log(self.median), self.sigma, size=size))
        return np.clip(values, self.low, self.high).astype(np.int64)


@dataclass(frozen=True)
class Resampled:
    """Tokens drawn with replacement from a column of a real trace (failed rows left out).

    source is a bundled name or a path, loaded with workloads.load_trace.
    """

    source: str
    column: str = "prompt_tokens"

    def __post_init__(self) -> None:
        if self.column not in ("prompt_tokens", "output_tokens"):
            raise ValueError(f"column must be prompt_tokens or output_tokens, got {self.column!r}")

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        trace = load_trace(self.source)
        values = trace.loc[~trace["failed"], self.column].to_numpy(dtype=np.int64)
        return rng.choice(values, size=size)


Arrivals = Poisson | Gamma
Lengths = Fixed | Uniform | LogNormal | Resampled


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _at_least_one(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
