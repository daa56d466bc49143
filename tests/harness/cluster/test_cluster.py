"""A cluster run: replicas on one clock behind a router."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from harness.cluster.router import ROUTERS, outstanding
from harness.cluster.run import simulate
from harness.engine.loop import simulate as simulate_engine
from harness.engine.recorder import write_run
from harness.model.config import ROUTERS as ROUTER_NAMES
from reports.load import load_run
from reports.schema import REPLICA_COLUMN, REQUEST_COLUMNS, STEP_COLUMNS

CHUNK = 64


def _conversations(make_trace, families=3, turns=4, gap_s=2.0):
    """Multi-turn conversations: turn t of a family repeats the family's earlier prompt and adds
    a chunk; requests arrive one by one, far enough apart to finish before the next."""
    prompts, hashes, arrivals = [], [], []
    for turn in range(turns):
        for family in range(families):
            chunks = 2 + turn
            prompts.append(chunks * CHUNK)
            hashes.append([family * 100 + c for c in range(chunks)])
            arrivals.append(gap_s * len(arrivals))
    return make_trace(prompts, [8] * len(prompts), arrivals=arrivals, hashes=hashes,
                      chunk_tokens=CHUNK)


def _cluster(config, replicas, router="round-robin"):
    return dataclasses.replace(config, replicas=replicas, router=router)


def test_the_config_names_exactly_the_routers():
    assert tuple(ROUTERS) == ROUTER_NAMES


def test_one_replica_is_the_engine(tiny_config, random_trace):
    trace = random_trace(np.random.default_rng(1), 40)
    config = tiny_config("paged", slots=1024)
    a, b = simulate(config, trace), simulate_engine(config, trace)
    pd.testing.assert_frame_equal(a.steps, b.steps)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    assert a.summary == b.summary


@pytest.mark.parametrize("router", ROUTER_NAMES)
def test_every_request_is_served_by_one_replica(tiny_config, random_trace, router):
    trace = random_trace(np.random.default_rng(2), 60, max_output=80, rate_per_s=200.0)
    config = _cluster(tiny_config("paged", slots=1024), 3, router)
    result = simulate(config, trace)
    requests, steps = result.requests, result.steps
    assert list(requests.columns) == [*REQUEST_COLUMNS, REPLICA_COLUMN]
    assert list(steps.columns) == [*STEP_COLUMNS, REPLICA_COLUMN]
    assert (requests.status == "completed").all()
    assert set(requests[REPLICA_COLUMN]) <= {0, 1, 2}
    per_replica = result.info["cluster"]["per_replica"]
    assert [r["requests"] for r in per_replica] == [
        int((requests[REPLICA_COLUMN] == k).sum()) for k in range(3)]
    assert sum(r["completed"] for r in per_replica) == result.summary["completed"] == 60
    for k in range(3):  # a replica's steps run one after another on its own clock
        mine = steps[steps[REPLICA_COLUMN] == k]
        ends = mine.time_s + mine.step_ms / 1e3
        assert (mine.time_s.to_numpy()[1:] >= ends.to_numpy()[:-1] - 1e-9).all()
    again = simulate(config, trace)  # deterministic
    pd.testing.assert_frame_equal(again.requests, requests)
    pd.testing.assert_frame_equal(again.steps, steps)


def test_round_robin_takes_replicas_in_turn(tiny_config, random_trace):
    trace = random_trace(np.random.default_rng(3), 20)
    result = simulate(_cluster(tiny_config("paged"), 3), trace)
    assert result.requests[REPLICA_COLUMN].tolist() == [i % 3 for i in range(20)]


def test_least_outstanding_fills_the_idle_replica(tiny_config, make_trace):
    # Three requests at once: each goes where nothing waits yet, so to 0, 1, 2 in turn.
    trace = make_trace([100, 100, 100, 100], [50, 50, 50, 50], arrivals=[0, 0, 0, 0.0001])
    result = simulate(_cluster(tiny_config("paged"), 3, "least-outstanding"), trace)
    assert result.requests[REPLICA_COLUMN].tolist()[:3] == [0, 1, 2]


def test_prefix_aware_routing_follows_the_cache(tiny_config, make_trace):
    trace = _conversations(make_trace)  # 3 conversations: round-robin moves each around
    config = tiny_config("paged", slots=8192)
    rr = simulate(_cluster(config, 2, "round-robin"), trace)
    aware = simulate(_cluster(config, 2, "prefix-aware"), trace)
    assert aware.summary["prefix_hit_rate"] > rr.summary["prefix_hit_rate"]
    replica = aware.requests[REPLICA_COLUMN].to_numpy().reshape(4, 3)  # turn x family
    assert (replica == replica[0]).all()  # every turn of a conversation on one replica


def test_decode_runs_change_nothing_in_a_cluster(tiny_config, random_trace):
    trace = random_trace(np.random.default_rng(4), 50, max_output=150, rate_per_s=200.0)
    config = _cluster(tiny_config("paged", slots=1024), 2, "least-kv")
    fast, slow = simulate(config, trace), simulate(config, trace, decode_runs=False)
    pd.testing.assert_frame_equal(fast.steps, slow.steps)
    pd.testing.assert_frame_equal(fast.requests, slow.requests)


def test_a_cluster_run_directory_reads_back(tiny_config, random_trace, tmp_path):
    trace = random_trace(np.random.default_rng(5), 30)
    result = simulate(_cluster(tiny_config("paged"), 2, "least-outstanding"), trace)
    write_run(result, tmp_path)
    run = load_run(tmp_path)
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["config"]["replicas"] == 2 and meta["config"]["router"] == "least-outstanding"
    assert len(meta["cluster"]["per_replica"]) == 2
    assert {"prefix_hit_rate", "load_imbalance"} <= set(meta["summary"])
    assert set(run.requests[REPLICA_COLUMN]) <= {0, 1}


def test_outstanding_counts_every_queue(tiny_config, random_trace):
    from harness.engine.loop import Replica

    replica = Replica(tiny_config("paged"), random_trace(np.random.default_rng(6), 3))
    assert outstanding(replica) == 0
