"""The load regime of a run, judged from its own figures, and the figures of a capacity curve.

A comparison of allocators means something only where memory is the limit, so every run is
placed in one of three regimes:

- overloaded: arrivals outpaced service; at the last arrival the waiting queue held at least
  OVERLOAD_QUEUE_SHARE of the slice's requests (or requests never finished). Latency then grows
  with the length of the slice, not with the allocator.
- pressed: not overloaded, and KV memory limited the engine at times: a preemption, or at least
  PRESSED_TIME_SHARE of the time with KV in use (live + reserved + internal) at
  PRESSED_KV_SHARE or more of the budget.
- idle: neither; memory never limited anything, so allocators can only tie on latency.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reports.load import Run, time_weights

OVERLOAD_QUEUE_SHARE = 0.10
PRESSED_KV_SHARE = 0.90
PRESSED_TIME_SHARE = 0.01
REGIMES = ("idle", "pressed", "overloaded")


@dataclass(frozen=True)
class Regime:
    name: str  # one of REGIMES
    why: str  # the figures that placed the run there


def offered_rate(run: Run) -> float:
    """Requests per second the slice offered: requests over the span of their arrivals."""
    arrival = run.requests["arrival_s"].to_numpy(dtype=float)
    if len(arrival) < 2 or arrival[-1] <= arrival[0]:
        return float("nan")
    return (len(arrival) - 1) / float(arrival[-1] - arrival[0])


def rate_key(run: Run) -> float:
    """The offered rate rounded so that runs of one slice at one rate share a key."""
    rate = offered_rate(run)
    return float(f"{rate:.4g}") if np.isfinite(rate) else float("nan")


def queue_at_last_arrival(run: Run) -> int:
    steps, arrival = run.steps, run.requests["arrival_s"]
    if steps.empty or arrival.empty:
        return 0
    before = steps[steps["time_s"] <= float(arrival.max())]
    return int(before["waiting"].iloc[-1]) if len(before) else 0


def kv_in_use_share(run: Run) -> np.ndarray:
    """Per step: KV slots held for sequences (live, reserved, internal) over the budget."""
    steps = run.steps
    used = steps["live"] + steps["reserved"] + steps["internal"]
    budget = steps["budget"].to_numpy(dtype=float)
    return np.where(budget > 0, used.to_numpy(dtype=float) / np.maximum(budget, 1), 0.0)


def regime(run: Run) -> Regime:
    total = run.num_requests
    if total == 0 or run.steps.empty:
        return Regime("idle", "no step ran")
    queued = queue_at_last_arrival(run)
    unfinished = run.status_counts().get("queued", 0) + run.status_counts().get("running", 0)
    if queued >= OVERLOAD_QUEUE_SHARE * total or unfinished:
        return Regime("overloaded", f"{queued} of {total} requests waiting at the last arrival")
    preemptions = int(run.figure("preemptions") or 0)
    weights = time_weights(run.steps)
    high = float(weights[kv_in_use_share(run) >= PRESSED_KV_SHARE].sum() / weights.sum())
    if preemptions > 0:
        return Regime("pressed", f"{preemptions} preemptions")
    if high >= PRESSED_TIME_SHARE:
        return Regime("pressed", f"KV >= {PRESSED_KV_SHARE:.0%} of budget for {high:.0%} "
                                 "of the time")
    return Regime("idle", f"KV peaked at {kv_in_use_share(run).max():.0%} of budget, "
                          f"{queued} waiting at the last arrival")


def normalized_latency(run: Run) -> float:
    """Mean over completed requests of end-to-end latency per output token (s/token), the
    vLLM paper's headline latency figure."""
    done = run.requests[run.requests["status"] == "completed"]
    done = done[done["output_tokens"] > 0]
    if done.empty:
        return float("nan")
    return float((done["e2e_s"] / done["output_tokens"]).mean())


@dataclass(frozen=True)
class Slo:
    """What a run must meet to count as sustained."""

    ttft_p99_s: float
    normalized_latency_s: float  # mean E2E per output token
    max_rejected_share: float = 0.01

    def describe(self) -> str:
        return (f"TTFT p99 <= {self.ttft_p99_s:g} s, mean normalized latency <= "
                f"{self.normalized_latency_s:g} s/token, <= {self.max_rejected_share:.0%} "
                "rejected, every request finished")

    def met(self, run: Run) -> bool:
        total = max(run.num_requests, 1)
        counts = run.status_counts()
        unfinished = counts.get("queued", 0) + counts.get("running", 0)
        return bool(run.figure("ttft_p99_s") <= self.ttft_p99_s
                    and normalized_latency(run) <= self.normalized_latency_s
                    and counts.get("rejected", 0) <= self.max_rejected_share * total
                    and unfinished == 0)


DEFAULT_SLO = Slo(ttft_p99_s=30.0, normalized_latency_s=0.2)


def sustained_rate(runs_by_rate: dict[float, Run], slo: Slo) -> float:
    """The highest offered rate at which the run meets the SLO with every lower rate meeting it
    too (a rate met only past a failure is luck of the slice); 0 when the lowest fails."""
    best = 0.0
    for rate in sorted(runs_by_rate):
        if not slo.met(runs_by_rate[rate]):
            break
        best = rate
    return best
