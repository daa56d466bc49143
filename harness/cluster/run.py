"""A cluster run: N replicas of one config on one SimPy clock, a router in front of them.

Every replica is a full engine (its own allocator, scheduler, executor and recorder); one
arrival process hands each request to the replica the router chooses. The run directory is the
single-replica one plus a `replica` column in steps.csv and requests.csv (steps are numbered per
replica), a whole-cluster summary, and per-replica summaries under "cluster" in run.json.
A config with one replica runs the plain engine, so its results are the engine's to the byte.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import simpy

from harness.cluster.router import make_router
from harness.engine.loop import (ArrivalClock, RunResult, Replica, _progress_bar, arrivals,
                                 simulate as simulate_engine, within_horizon)
from harness.engine.summary import summarize
from harness.model.config import RunConfig
from reports.schema import CLUSTER_JSON_KEY, REPLICA_COLUMN


def simulate(config: RunConfig, trace: pd.DataFrame, *, progress: bool = False,
             decode_runs: bool = True) -> RunResult:
    """One run of config on trace: on config.replicas replicas behind config.router."""
    if config.replicas == 1:
        return simulate_engine(config, trace, progress=progress, decode_runs=decode_runs)
    trace = within_horizon(config, trace)
    replicas = [Replica(config, trace, decode_runs=decode_runs) for _ in range(config.replicas)]
    router = make_router(config.router, replicas, int(trace.attrs.get("chunk_tokens", 0) or 0))
    assignment = np.full(len(trace), -1, dtype=np.int64)

    def route(group):
        chosen = router.choose(group)
        assignment[group.rid] = chosen
        return replicas[chosen]

    env = simpy.Environment()
    clock = ArrivalClock()
    env.process(arrivals(env, trace, route, replicas, clock, seed=config.seed))
    bar = _progress_bar(len(trace), progress)
    loops = [env.process(replica.loop(env, clock, bar)) for replica in replicas]
    env.run(until=simpy.AllOf(env, loops))
    if bar is not None:
        bar.close()
    return _result(config, replicas, assignment, env.now)


def _result(config: RunConfig, replicas: list[Replica], assignment: np.ndarray,
            end_s: float) -> RunResult:
    tables = [replica.tables() for replica in replicas]
    served = np.where(assignment >= 0, assignment, 0)
    rows = [np.flatnonzero(served == k) for k in range(len(replicas))]
    requests = pd.concat([reqs.iloc[idx] for (_, reqs), idx in zip(tables, rows)]).sort_index()
    requests[REPLICA_COLUMN] = assignment
    steps = pd.concat([steps.assign(**{REPLICA_COLUMN: k})
                       for k, (steps, _) in enumerate(tables)], ignore_index=True)
    budget = replicas[0].budget
    per_replica = []
    for k, (replica, (steps_k, _)) in enumerate(zip(replicas, tables)):
        figures = summarize(steps_k, requests.iloc[rows[k]], budget_slots=budget.slots,
                            bytes_per_token=budget.bytes_per_token,
                            output_tokens=replica.output_tokens, sim_time_s=end_s)
        per_replica.append({REPLICA_COLUMN: k, "busy_s": float(steps_k["step_ms"].sum() / 1e3),
                            "prefix_hit_rate": prefix_hit_rate(requests.iloc[rows[k]]),
                            **figures})
    summary = summarize(steps, requests, budget_slots=budget.slots * len(replicas),
                        bytes_per_token=budget.bytes_per_token,
                        output_tokens=sum(r.output_tokens for r in replicas), sim_time_s=end_s)
    summary["prefix_hit_rate"] = prefix_hit_rate(requests)
    summary["load_imbalance"] = load_imbalance([r["busy_s"] for r in per_replica])
    info = replicas[0].info()
    info[CLUSTER_JSON_KEY] = {"replicas": len(replicas), "router": config.router,
                       "per_replica": per_replica}
    return RunResult(config, steps, requests, summary, info)


def prefix_hit_rate(requests: pd.DataFrame) -> float:
    """Prompt tokens found in a prefix cache, over the prompt tokens of admitted requests."""
    admitted = requests["admit_s"].notna()
    prompt = int(requests.loc[admitted, "prompt_tokens"].sum())
    return int(requests["prefix_hit_tokens"].sum()) / prompt if prompt else float("nan")


def load_imbalance(busy_s: list[float]) -> float:
    """The busiest replica's busy time over the mean busy time (1 is perfect balance)."""
    mean = sum(busy_s) / len(busy_s)
    return max(busy_s) / mean if mean > 0 else float("nan")
