"""A trace spec: which trace a run replays and how it was cut and scaled, as plain data.

A run's trace is this spec loaded: the file (or bundled name) read as its format, then a time
window, a slice of requests, an arrival-rate scale, a length cap and how requests decode (n
samples, beam width, speculative tokens and their acceptance), in that order. The loaded
frame carries its spec in attrs["spec"], so a run directory records exactly what it replayed and
`kvharness simulate --from RUN_DIR/run.json` can replay it again.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd


DECODING_FIELDS = ("n", "beam_width", "spec_tokens", "spec_accept")


class TraceSpecError(ValueError):
    """A spec field that cannot describe a slice of a trace (names the field and the value)."""


@dataclass(frozen=True)
class TraceSpec:
    source: str = "azure-conv"  # a bundled trace name or a path
    format: str | None = None  # None: detected from the content
    skip_invalid: bool = False  # drop invalid rows (counted in attrs["skipped_rows"])
    start_s: float = 0.0  # keep requests arriving from here on...
    duration_s: float | None = None  # ...and within this long
    start: int = 0  # then skip this many requests...
    max_requests: int | None = None  # ...and keep at most this many
    rate_scale: float = 1.0  # arrival rate multiplier: arrival times are divided by it
    cap_lengths_to: int | None = None  # fit every request into this many tokens
    # How every request decodes (None: as the trace says); see transforms.set_decoding.
    n: int | None = None
    beam_width: int | None = None
    spec_tokens: int | None = None
    spec_accept: float | None = None

    def __post_init__(self) -> None:
        checks = (
            ("rate_scale", self.rate_scale > 0 and math.isfinite(self.rate_scale), "> 0"),
            ("start_s", self.start_s >= 0, ">= 0"),
            ("duration_s", self.duration_s is None or self.duration_s > 0, "> 0"),
            ("start", self.start >= 0, ">= 0"),
            ("max_requests", self.max_requests is None or self.max_requests >= 1, ">= 1"),
            ("cap_lengths_to", self.cap_lengths_to is None or self.cap_lengths_to >= 2, ">= 2"),
        )
        for name, ok, allowed in checks:
            if not ok:
                raise TraceSpecError(f"trace.{name} must be {allowed}, got {getattr(self, name)}")
        from workloads.transforms import check_decoding

        try:
            check_decoding(*self._decoding().values())
        except ValueError as exc:
            raise TraceSpecError(f"trace.{exc}") from None

    def _decoding(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in DECODING_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TraceSpecError(f"trace: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The fields, less decoding fields left unset (so a spec written before they existed
        reads the same)."""
        out = dataclasses.asdict(self)
        for name in DECODING_FIELDS:
            if out[name] is None:
                del out[name]
        return out

    def load(self) -> pd.DataFrame:
        """The trace as the run replays it."""
        from workloads import transforms
        from workloads.load import load_trace

        trace = load_trace(self.source, format=self.format, skip_invalid=self.skip_invalid)
        if self.start_s or self.duration_s is not None:
            end_s = math.inf if self.duration_s is None else self.start_s + self.duration_s
            trace = transforms.time_window(trace, self.start_s, end_s)
        if self.start or self.max_requests is not None:
            count = len(trace) - self.start if self.max_requests is None else self.max_requests
            trace = transforms.take(trace, count, self.start)
        if self.rate_scale != 1.0:
            trace = transforms.scale_rate(trace, self.rate_scale)
        if self.cap_lengths_to is not None:
            trace = transforms.cap_lengths(trace, self.cap_lengths_to)
        decoding = self._decoding()
        if any(value is not None for value in decoding.values()):
            try:
                trace = transforms.set_decoding(trace, **decoding)
            except ValueError as exc:
                raise TraceSpecError(f"trace: {exc}") from None
        trace.attrs["spec"] = self.to_dict()
        return trace
