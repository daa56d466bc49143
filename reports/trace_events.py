"""A run as a Chrome / Perfetto timeline (the JSON trace-event format), one process per replica.

Open the file in https://ui.perfetto.dev or chrome://tracing. Each replica is a process: its
engine steps are complete events ("X") on one track, named by what they ran (prefill, decode or
both) with their token counts and queues as arguments; each request is a nested async span
("b"/"e", its request id as the id) from arrival to its end: queued until admitted, prefill until
its first token, decode until it finished. A rejected request is an instant event. Times are in
microseconds from the start of the trace, as the format asks.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from reports.load import Run, load_run
from reports.schema import REPLICA_COLUMN

STEP_TRACK = 0  # tid of a replica's step events

_STEP_ARGS = ("prefill_tokens", "decode_tokens", "running", "waiting", "swapped")


def _replicas(table: pd.DataFrame) -> np.ndarray:
    """The replica of every row: the column of a cluster run, 0 for a single-replica run."""
    if REPLICA_COLUMN in table.columns:
        return table[REPLICA_COLUMN].to_numpy(dtype=np.int64)
    return np.zeros(len(table), dtype=np.int64)


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def _metadata(replicas: list[int]) -> Iterator[dict[str, Any]]:
    for pid in replicas:
        yield {"name": "process_name", "ph": "M", "pid": pid, "tid": STEP_TRACK,
               "args": {"name": f"replica {pid}"}}
        yield {"name": "process_sort_index", "ph": "M", "pid": pid, "tid": STEP_TRACK,
               "args": {"sort_index": pid}}
        yield {"name": "thread_name", "ph": "M", "pid": pid, "tid": STEP_TRACK,
               "args": {"name": "steps"}}


def _step_events(steps: pd.DataFrame) -> Iterator[dict[str, Any]]:
    pids = _replicas(steps).tolist()
    start = steps["time_s"].to_numpy(dtype=float).tolist()
    dur = steps["step_ms"].to_numpy(dtype=float).tolist()
    args = {name: steps[name].to_numpy(dtype=np.int64).tolist() for name in _STEP_ARGS}
    prefill, decode = args["prefill_tokens"], args["decode_tokens"]
    for i, pid in enumerate(pids):
        kind = ("prefill+decode" if prefill[i] and decode[i]
                else "prefill" if prefill[i] else "decode")
        yield {"name": kind, "cat": "step", "ph": "X", "pid": pid, "tid": STEP_TRACK,
               "ts": _us(start[i]), "dur": _us(dur[i] / 1e3),
               "args": {name: values[i] for name, values in args.items()}}


def _request_events(requests: pd.DataFrame, end_s: float) -> Iterator[dict[str, Any]]:
    """Nested async spans per request: the whole request, then its queued, prefill and decode
    phases; a phase not reached ends none, a request unfinished at the end ends with the run."""
    pids = _replicas(requests).tolist()
    columns = ("request_id", "arrival_s", "admit_s", "first_token_s", "finish_s", "status")
    rows = zip(pids, *(requests[c].tolist() for c in columns))
    for pid, rid, arrival, admit, first, finish, status in rows:
        base = {"cat": "request", "pid": pid, "id": int(rid)}
        if status == "rejected":
            yield {"name": f"request {rid} rejected", "ph": "i", "s": "p", "pid": pid,
                   "tid": STEP_TRACK, "ts": _us(arrival)}
            continue
        marks = [arrival] + [t for t in (admit, first, finish) if not math.isnan(t)]
        stop = marks[-1] if status == "completed" else max(end_s, marks[-1])
        yield {**base, "name": f"request {rid}", "ph": "b", "ts": _us(arrival)}
        bounds = marks + ([] if status == "completed" else [stop])
        for phase, (t0, t1) in zip(("queued", "prefill", "decode"), zip(bounds, bounds[1:])):
            yield {**base, "name": phase, "ph": "b", "ts": _us(t0)}
            yield {**base, "name": phase, "ph": "e", "ts": _us(t1)}
        yield {**base, "name": f"request {rid}", "ph": "e", "ts": _us(stop)}


def trace_events(run: Run) -> dict[str, Any]:
    """The run's timeline as a trace-event JSON object."""
    steps, requests = run.steps, run.requests
    replicas = sorted(set(_replicas(steps).tolist()) | set(_replicas(requests).tolist()))
    ends = steps["time_s"] + steps["step_ms"] / 1e3
    end_s = float(ends.max()) if len(steps) else 0.0
    events = [*_metadata(replicas), *_step_events(steps), *_request_events(requests, end_s)]
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"trace": run.trace_name, "allocator": run.allocator}}


def export_trace(run_dir: str | Path, out: str | Path) -> int:
    """Write the timeline of run_dir to out; return the number of events."""
    data = trace_events(load_run(run_dir))
    with open(out, "w") as fh:
        json.dump(data, fh, separators=(",", ":"))
        fh.write("\n")
    return len(data["traceEvents"])
