"""Request traces: loaders for real formats, synthetic generators and transforms, one schema.

Every source produces the canonical trace documented in workloads/trace.py: a DataFrame of
request_id, arrival_s, prompt_tokens, output_tokens, n, prefix_hashes, failed, with attrs.
Real traces ship in workloads/data/ ("azure-conv", "mooncake-conv"; see its README.md).
"""
from __future__ import annotations

from workloads.distributions import Fixed, Gamma, LogNormal, Poisson, Resampled, Uniform
from workloads.generate import WorkloadSpec, generate
from workloads.load import iter_requests, load_trace
from workloads.sources import BUNDLED
from workloads.spec import TraceSpec, TraceSpecError
from workloads.stats import TraceStats, describe
from workloads.trace import COLUMNS, Request, TraceError
from workloads.transforms import cap_lengths, scale_rate, take, time_window

__all__ = [
    "BUNDLED",
    "COLUMNS",
    "Fixed",
    "Gamma",
    "LogNormal",
    "Poisson",
    "Request",
    "Resampled",
    "TraceError",
    "TraceSpec",
    "TraceSpecError",
    "TraceStats",
    "Uniform",
    "WorkloadSpec",
    "cap_lengths",
    "describe",
    "generate",
    "iter_requests",
    "load_trace",
    "scale_rate",
    "take",
    "time_window",
]
