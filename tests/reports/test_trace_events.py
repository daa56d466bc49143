"""export-trace: a run directory as trace-event JSON that Perfetto and chrome://tracing read."""
from __future__ import annotations

import dataclasses
import json
from collections import Counter

import numpy as np

from harness.cli import main
from harness.cluster.run import simulate
from harness.engine.recorder import write_run
from harness.model.config import AllocatorConfig, RunConfig
from reports.schema import REPLICA_COLUMN
from workloads.trace import make_trace


def _trace(rows=30):
    rng = np.random.default_rng(7)
    return make_trace(
        arrival_s=np.sort(rng.uniform(0, 1, rows)), prompt_tokens=rng.integers(10, 300, rows),
        output_tokens=rng.integers(1, 40, rows), n=np.ones(rows, dtype=np.int64),
        prefix_hashes=None, failed=np.zeros(rows, dtype=bool),
        attrs={"name": "t", "source": "tests", "format": "synthetic", "chunk_tokens": 0})


def test_export_trace_writes_one_process_per_replica(tmp_path, capsys):
    config = RunConfig(allocator=AllocatorConfig("paged"), budget_slots_override=4096,
                       replicas=3, router="least-outstanding")
    result = simulate(config, _trace())
    write_run(result, tmp_path / "run")
    assert main(["export-trace", str(tmp_path / "run"), "-o", str(tmp_path / "t.json")]) == 0
    data = json.loads((tmp_path / "t.json").read_text())
    events = data["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert names == {0: "replica 0", 1: "replica 1", 2: "replica 2"}
    steps = [e for e in events if e["ph"] == "X"]
    assert len(steps) == len(result.steps)
    assert Counter(e["pid"] for e in steps) == Counter(result.steps[REPLICA_COLUMN].tolist())
    assert all(e["dur"] > 0 and e["ts"] >= 0 for e in steps)
    begins = [e for e in events if e["ph"] == "b"]
    ends = [e for e in events if e["ph"] == "e"]
    assert len(begins) == len(ends)
    whole = {e["id"]: e["pid"] for e in begins if e["name"].startswith("request")}
    assert whole == dict(zip(result.requests.request_id, result.requests[REPLICA_COLUMN]))
    for rid in whole:  # queued, prefill, decode nest inside the request's span
        mine = [e for e in events if e.get("id") == rid and e["ph"] in "be"]
        assert [e["name"] for e in mine] == [f"request {rid}", "queued", "queued", "prefill",
                                             "prefill", "decode", "decode", f"request {rid}"]
        assert [e["ts"] for e in mine] == sorted(e["ts"] for e in mine)


def test_a_single_replica_run_is_process_zero(tmp_path):
    config = RunConfig(allocator=AllocatorConfig.of("static", max_model_len=1024),
                       budget_slots_override=4096)
    result = simulate(dataclasses.replace(config), _trace(10))
    write_run(result, tmp_path)
    assert main(["export-trace", str(tmp_path)]) == 0
    events = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    assert {e["pid"] for e in events} == {0}
