from __future__ import annotations

import json
import math

import numpy as np

from allocators import Usage
from harness.engine.batch import Batch
from harness.engine.recorder import Recorder, write_json
from reports.schema import HOST_HIT_COLUMN, HOST_TIER_STEP_COLUMNS, STEP_COLUMNS


def test_step_rows_survive_chunking_in_order(make_trace):
    recorder = Recorder(make_trace([1], [1]))
    usage = Usage(100, 100, 10, 12, 5, 1, 0, 84, 84)
    rows = 20000  # more than two chunks
    for i in range(rows):
        recorder.row(i * 0.5, 0.25, i % 7, 1, 0, i % 3, 2, usage)
    steps = recorder.steps_frame()
    assert list(steps.columns) == list(STEP_COLUMNS)
    assert len(steps) == rows
    assert (steps["step"] == np.arange(rows)).all()
    assert steps["time_s"].iloc[-1] == (rows - 1) * 0.5
    assert (steps["batch_tokens"] == steps["prefill_tokens"] + 2).all()
    assert steps["utilization"].iloc[0] == usage.utilization
    assert steps["running"].dtype == np.int64


def test_requests_frame_fills_end_status_and_latencies(make_trace):
    recorder = Recorder(make_trace([10, 10, 10], [5, 5, 5], arrivals=[0.0, 1.0, 2.0]))
    recorder.admitted(0, 0.0, 0, 0)
    recorder.first_token(0, 0.5)
    recorder.finished(0, 1.3)
    recorder.rejected(1, "too long")
    recorder.admitted(2, 2.0, 16, 0)
    recorder.preempted(2)
    recorder.admitted(2, 2.5, 12, 0)
    requests = recorder.requests_frame({2: "running"})
    assert list(requests["status"]) == ["completed", "rejected", "running"]
    assert requests["ttft_s"][0] == 0.5 and math.isclose(requests["tpot_s"][0], 0.2)
    assert requests["e2e_s"][0] == 1.3 and math.isnan(requests["e2e_s"][2])
    assert requests["admit_s"][2] == 2.0  # the first admission
    # hits of the first admission: the second found the request's own blocks
    assert requests["prefix_hit_tokens"][2] == 16 and requests["preemptions"][2] == 1
    assert requests["reason"][1] == "too long"
    assert HOST_HIT_COLUMN not in requests  # a run without a host tier


def test_a_host_tier_adds_its_columns_filled_only_where_copies_ran(make_trace):
    recorder = Recorder(make_trace([40, 40], [5, 5]), host_tier=True)
    usage = Usage(100, 100, 10, 12, 5, 1, 0, 84, 84)
    for i in range(20000):  # more than two chunks: a copy's row is counted across them
        batch = Batch(prefill_tokens=1)
        if i in (3, 9000, 19999):
            batch.host_offload_tokens, batch.host_restore_tokens = i, 2 * i + 1
        recorder.step(i * 0.5, 0.25, 1, 0, 0, batch, usage)
    steps = recorder.steps_frame()
    assert list(steps.columns) == [*STEP_COLUMNS, *HOST_TIER_STEP_COLUMNS]
    offload, restore = (steps[name] for name in HOST_TIER_STEP_COLUMNS)
    assert offload[offload > 0].to_dict() == {3: 3, 9000: 9000, 19999: 19999}
    assert restore[restore > 0].to_dict() == {3: 7, 9000: 18001, 19999: 39999}
    recorder.admitted(0, 0.0, 32, 16)
    recorder.preempted(0)
    recorder.admitted(0, 1.0, 39, 39)  # its own blocks back from the host: not reuse
    assert list(recorder.requests_frame({})[HOST_HIT_COLUMN]) == [16, 0]


def test_json_writes_nan_as_null(tmp_path):
    write_json(tmp_path / "x.json", {"a": float("nan"), "b": np.int64(3), "c": (1.5,)})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None, "b": 3, "c": [1.5]}



class _Pool:
    """What the recorder reads of a measured run's executor."""

    kv_allocated_bytes = 0


def test_kv_allocated_bytes_is_read_after_each_step_only_when_the_executor_has_it(make_trace):
    usage = Usage(100, 100, 10, 12, 5, 1, 0, 84, 84)
    pool = _Pool()
    measured, priced = Recorder(make_trace([1], [1]), pool), Recorder(make_trace([1], [1]))
    for i in range(3):
        pool.kv_allocated_bytes = (2 - i) * 1024
        for recorder in (measured, priced):
            recorder.row(i * 0.5, 0.25, 1, 0, 0, 0, 1, usage)
    assert list(measured.steps_frame()["kv_allocated_bytes"]) == [2048, 1024, 0]
    assert measured.peak_kv_allocated_bytes == 2048
    assert list(priced.steps_frame().columns) == list(STEP_COLUMNS)
    assert priced.peak_kv_allocated_bytes is None
