"""The SimPy engine: arrivals -> scheduler -> executor -> clock -> recorder.

Processes share one clock. The arrival process sleeps until each request's arrival and hands it
to a replica (the only one here; harness.cluster routes among several). A replica's loop
schedules a step, asks the executor how long it takes, records it and advances the clock by that
much; with nothing to run it sleeps until the next arrival. The executor is the only part that
differs between a simulated and a measured run.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import simpy

from allocators import spec_of
from harness.model.budget import kv_budget
from harness.model.config import ConfigError, RunConfig
from harness.engine.executor import CostModelExecutor, ExecutorFactory, KVGeometry
from harness.model.planner import preallocation_warning, run_params
from harness.engine.recorder import Recorder
from harness.engine.sequences import Group
from harness.engine.decode_runs import DecodeRun
from harness.engine.decoding import beam_seq_ids, decoding_for, sequences
from harness.engine.scheduler import Scheduler
from harness.engine.summary import summarize


# Decode-run steps priced per call: enough to amortize numpy, few enough not to price steps
# that the next arrival (every ~30 steps on the Azure trace) cuts off.
DECODE_RUN_CHUNK = 32


@dataclass
class ArrivalClock:
    """When the arrival process next runs: the exact SimPy time of its pending timeout (infinite
    once every request has arrived). Until then nothing outside a replica reads or changes it
    (a router reads replicas only when a request arrives, and replicas never read each other),
    so a replica may take steps that end before then ahead of the SimPy clock."""

    next_s: float = -math.inf  # before the process first runs: an arrival may come at once


class SchedulerStalled(RuntimeError):
    """Work remains but the scheduler finds nothing to run and nothing will arrive."""


@dataclass
class RunResult:
    """What a run produced: the two tables, the summary, and where it came from."""

    config: RunConfig
    steps: pd.DataFrame
    requests: pd.DataFrame
    summary: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)  # trace, executor, device


def simulate(
    config: RunConfig,
    trace: pd.DataFrame,
    *,
    progress: bool | Callable[[int], None] = False,
    executor_factory: ExecutorFactory | None = None,
    decode_runs: bool = True,
) -> RunResult:
    """Replay a canonical trace through one allocator; the cost model prices steps unless
    another executor factory (config, geometry) -> Executor is given. decode_runs=False takes
    every step through schedule() (the decode-run shortcut must change nothing). progress: a
    bar on stderr, or a callable told how many more requests finished (a parent process's
    bar over several runs)."""
    engine = Engine(config, trace, executor_factory=executor_factory, decode_runs=decode_runs)
    return engine.run(progress=progress)


def _effective_max_model_len(config: RunConfig) -> int | None:
    """The tighter of the run's max_model_len (scheduler or model) and the allocator's fixed
    per-request reservation."""
    reservation = spec_of(config.allocator.name).max_model_len(run_params(config))
    limits = [config.max_model_len, reservation]
    limits = [x for x in limits if x is not None]
    return min(limits) if limits else None


def within_horizon(config: RunConfig, trace: pd.DataFrame) -> pd.DataFrame:
    """The requests that are part of the run: those arriving before the horizon, if any."""
    if config.horizon_s is None:
        return trace
    attrs = dict(trace.attrs)
    trace = trace[trace["arrival_s"] < config.horizon_s]
    trace.attrs.update(attrs)
    return trace


class Engine:
    """One replica fed by the arrival process: the single-GPU run."""

    def __init__(
        self,
        config: RunConfig,
        trace: pd.DataFrame,
        *,
        executor_factory: ExecutorFactory | None = None,
        decode_runs: bool = True,
    ) -> None:
        self.config = config
        self.trace = within_horizon(config, trace)
        self.replica = Replica(config, self.trace, executor_factory=executor_factory,
                               decode_runs=decode_runs)
        replica = self.replica
        self.budget, self.allocator, self.executor = (replica.budget, replica.allocator,
                                                      replica.executor)
        self.recorder, self.scheduler = replica.recorder, replica.scheduler

    def run(self, *, progress: bool | Callable[[int], None] = False) -> RunResult:
        env = simpy.Environment()
        replica = self.replica
        clock = ArrivalClock()
        env.process(arrivals(env, self.trace, lambda group: replica, [replica], clock,
                             seed=self.replica.config.seed))
        bar = _progress_bar(len(self.trace), progress)
        loop = env.process(replica.loop(env, clock, bar))
        env.run(until=loop)
        if bar is not None:
            bar.close()
        return replica.result(env.now)


def arrivals(env: simpy.Environment, trace: pd.DataFrame, route: Callable[[Group], Replica],
             replicas: list[Replica], clock: ArrivalClock, *, seed: int = 0):
    """Hand each request, at its arrival time, to the replica route chooses; then tell every
    replica that nothing more will arrive. clock says when this process next runs; seed: of
    the decoding patterns' modelled choices."""
    arrival = trace["arrival_s"].to_numpy(dtype=np.float64).tolist()
    prompt = trace["prompt_tokens"].to_numpy(dtype=np.int64).tolist()
    output = trace["output_tokens"].to_numpy(dtype=np.int64).tolist()
    beams = trace["beam_width"].to_numpy(dtype=np.int64)
    samples = sequences(trace["n"].to_numpy(dtype=np.int64), beams).tolist()
    drafts = trace["spec_tokens"].to_numpy(dtype=np.int64).tolist()
    accept = trace["spec_accept"].to_numpy(dtype=np.float64).tolist()
    beams = beams.tolist()
    hashes = trace["prefix_hashes"].tolist()
    next_child = len(trace)  # children's seq ids follow the request ids...
    # ...and beams forked during a beam search follow those
    forked_ids = beam_seq_ids(next_child + sum(samples) - len(samples))
    for rid in range(len(trace)):
        delay = arrival[rid] - env.now
        if delay > 0:
            clock.next_s = env.now + delay  # the time SimPy gives the timeout, to the bit
            yield env.timeout(delay)
        n = samples[rid]
        seq_ids = (rid, *range(next_child, next_child + n - 1))
        next_child += n - 1
        decoding = None
        if beams[rid] > 1 or drafts[rid]:
            decoding = decoding_for(rid, beams[rid], drafts[rid], accept[rid], seed=seed,
                                    seq_ids=forked_ids)
        group = Group(rid, prompt[rid], output[rid], n, hashes[rid], seq_ids, arrival[rid],
                      decoding)
        route(group).add(group)
    clock.next_s = math.inf
    for replica in replicas:
        replica.close()


class Replica:
    """One engine's objects (budget, allocator, recorder, scheduler, executor) and its step
    loop, a SimPy process that several replicas may share one clock with."""

    def __init__(
        self,
        config: RunConfig,
        trace: pd.DataFrame,
        *,
        executor_factory: ExecutorFactory | None = None,
        decode_runs: bool = True,
    ) -> None:
        self.config = config
        self.trace = trace
        self.budget = kv_budget(config)
        warning = preallocation_warning(config)
        if warning:
            raise ConfigError(warning)
        host_slots = config.cpu_cache_bytes // self.budget.bytes_per_token
        if config.cpu_cache_bytes and not host_slots:
            raise ConfigError(f"cpu_cache_bytes {config.cpu_cache_bytes} hold no token of KV "
                              f"({self.budget.bytes_per_token} bytes)")
        try:
            self.allocator = spec_of(config.allocator.name).build(
                self.budget.slots, run_params(config), host_cache_slots=host_slots)
        except ValueError as exc:  # a check of the allocator its spec does not repeat
            raise ConfigError(f"allocator {config.allocator.name!r}: {exc}") from None
        alloc = self.allocator
        geometry = KVGeometry(alloc.block_size, alloc.blocks_per_segment, self.budget.slots,
                              alloc.host_tier_blocks)
        self.executor = (executor_factory or CostModelExecutor)(config, geometry)
        self.decode_runs = decode_runs
        self.recorder = Recorder(trace, self.executor, host_tier=bool(alloc.host_tier_blocks))
        self.scheduler = Scheduler(
            config.scheduler,
            self.allocator,
            self.recorder,
            budget_slots=self.budget.slots,
            swap_slots=config.scheduler.swap_space_bytes // self.budget.bytes_per_token,
            chunk_tokens=int(trace.attrs.get("chunk_tokens", 0) or 0),
            max_model_len=_effective_max_model_len(config),
            with_layouts=self.executor.needs_layouts,
            sliding_window=config.model.sliding_window,
        )
        self.groups: list[Group] = []
        self.arrived = 0
        self._idle: simpy.Event | None = None
        self._arrivals_done = False

    def add(self, group: Group) -> None:
        """A request arrives here: queue it and wake the loop if it sleeps."""
        self.groups.append(group)
        self.scheduler.add(group)
        self.arrived += 1
        self._wake()

    def close(self) -> None:
        """Nothing more will arrive: the loop ends once its work is done."""
        self._arrivals_done = True
        self._wake()

    def _wake(self) -> None:
        if self._idle is not None and not self._idle.triggered:
            self._idle.succeed()

    def loop(self, env: simpy.Environment, clock: ArrivalClock, bar=None):
        sched, executor, recorder = self.scheduler, self.executor, self.recorder
        usage = self.allocator.usage
        waiting, swapped = sched.waiting, sched.swapped
        shown = 0
        horizon = self.config.horizon_s
        while horizon is None or env.now < horizon:
            batch = sched.schedule(env.now)
            if batch is None:
                if self._arrivals_done:
                    if sched.has_work:
                        raise SchedulerStalled(
                            f"t={env.now:.3f}s: {len(sched.running)} running, {len(waiting)} "
                            f"waiting, {len(swapped)} swapped, nothing schedulable"
                        )
                    break
                self._idle = env.event()
                yield self._idle
                self._idle = None
                continue
            step_s = executor.step(batch)
            recorder.step(
                env.now, step_s, sched.num_running_seqs, len(waiting), len(swapped), batch, usage()
            )
            yield env.timeout(step_s)
            sched.complete(env.now)
            if self.decode_runs:
                run = sched.decode_run()
                if run is not None:
                    yield from self._decode_run(env, run, clock)
            if bar is not None and recorder.num_done != shown:
                bar.update(recorder.num_done - shown)
                shown = recorder.num_done

    def _decode_run(self, env: simpy.Environment, run: DecodeRun, clock: ArrivalClock):
        """Decode-only steps that the scheduler knows in advance, run and recorded one by one
        exactly as the loop would; an arrival ends the run, since the next step may admit it.
        An executor that prices decode steps in bulk prices them in chunks (a run is often cut
        short by the next arrival); any other executor runs each step's batch.

        Steps that end before the next arrival run ahead of the SimPy clock: `now` is this
        replica's time, `synced` the clock's, and one timeout catches the clock up when a step
        would end at or past the next arrival, or the run ends. A step is taken ahead only when
        that timeout lands on `now` to the bit, so every time is the one step-by-step timeouts
        would give."""
        sched, row, usage = self.scheduler, self.recorder.row, self.allocator.usage
        executor = self.executor
        decode_steps = getattr(executor, "decode_steps", None)
        horizon = self.config.horizon_s if self.config.horizon_s is not None else math.inf
        arrived = self.arrived
        running, waiting = sched.num_running_seqs, len(sched.waiting)
        done = 0
        now = synced = env.now
        while done < run.steps and self.arrived == arrived and now < horizon:
            count = min(DECODE_RUN_CHUNK, run.steps - done)
            priced: list[float | None] = [None] * count
            if decode_steps is not None:
                offsets = np.arange(done, done + count, dtype=np.int64)
                priced = decode_steps(run.decode_tokens, run.attended(offsets),
                                      run.longest(offsets)).tolist()
            for step_s in priced:
                if self.arrived != arrived or now >= horizon:
                    break
                batch = sched.decode_step(run, done, build=step_s is None)
                if step_s is None:
                    step_s = executor.step(batch)
                row(now, step_s, running, waiting, 0, 0, run.decode_tokens, usage())
                done += 1
                end = now + step_s
                if end < clock.next_s and synced + (end - synced) == end:
                    now = end
                    continue
                if now != synced:
                    yield env.timeout(now - synced)
                yield env.timeout(step_s)
                now = synced = env.now
        if now != synced:
            yield env.timeout(now - synced)
        sched.end_decode_run(done)

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The steps and requests tables (a row for every request of the trace; those never
        given to this replica read as queued)."""
        sched = self.scheduler
        end_status = {g.rid: "running" for g in sched.running}
        end_status.update({g.rid: "queued" for g in (*sched.waiting, *sched.swapped)})
        return self.recorder.steps_frame(), self.recorder.requests_frame(end_status)

    @property
    def output_tokens(self) -> int:
        return sum(g.n * g.generated for g in self.groups)

    def result(self, end_s: float) -> RunResult:
        """The run's tables and summary, the clock having stopped at end_s."""
        steps, requests = self.tables()
        summary = summarize(
            steps,
            requests,
            budget_slots=self.budget.slots,
            bytes_per_token=self.budget.bytes_per_token,
            output_tokens=self.output_tokens,
            sim_time_s=end_s,
            capped=self.trace.attrs.get("capped"),
        )
        peak_kv_bytes = self.recorder.peak_kv_allocated_bytes
        if peak_kv_bytes is not None:
            summary["peak_kv_allocated_bytes"] = peak_kv_bytes
        return RunResult(self.config, steps, requests, summary, self.info())

    def info(self) -> dict[str, Any]:
        """Where the run came from: trace, executor, device."""
        return {
            "trace": {
                "name": self.trace.attrs.get("name"),
                "source": self.trace.attrs.get("source"),
                "rows": len(self.trace),
                "spec": self.trace.attrs.get("spec"),  # what reloads it; None: built in memory
            },
            "executor": self.executor.name,
            "device": self.executor.device,
            "executor_details": dict(getattr(self.executor, "details", {})),
        }


class _Callback:
    """The bar interface over a callable that counts finished requests."""

    def __init__(self, report: Callable[[int], None]) -> None:
        self.update = report

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool | Callable[[int], None]):
    if callable(enabled):
        return _Callback(enabled)
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="req", file=sys.stderr, desc="requests done")
