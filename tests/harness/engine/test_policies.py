"""Each scheduling policy's defining behaviour, and that decode runs change none of them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.engine.executor import CostModelExecutor
from harness.engine.loop import Engine, simulate
from harness.engine.policies import POLICIES
from harness.model.config import SCHEDULING_POLICIES, ConfigError, SchedulerConfig


class _Watch:
    """Prices every step with the cost model (no bulk decode pricing, so it sees each step) and
    records, per step, the batch and which running requests were ready to decode."""

    name = "watch"
    device = None
    needs_layouts = False

    def __init__(self, config, geometry):
        self.inner = CostModelExecutor(config, geometry)
        self.scheduler = None  # set by the test
        self.steps: list[tuple] = []

    def step(self, batch):
        swapped_in = {op.seq_id for op in batch.swap_in}
        ready = {sid for g in self.scheduler.running if g.first_token_done
                 and not g.in_prefill and g.seq_ids[0] not in swapped_in
                 for sid in g.live_seq_ids}
        self.steps.append((batch, ready))
        return self.inner.step(batch)


def _watched(config, trace):
    engine = Engine(config, trace, executor_factory=_Watch, decode_runs=False)
    engine.executor.scheduler = engine.scheduler
    result = engine.run()
    return result, engine.executor.steps


def test_the_config_names_exactly_the_policies():
    assert tuple(POLICIES) == SCHEDULING_POLICIES


def test_prefill_first_never_mixes_prefill_and_decode(tiny_config, random_trace):
    trace = random_trace(np.random.default_rng(5), 60, max_output=80)
    mixed = simulate(tiny_config("paged", slots=2048), trace).steps
    v0 = simulate(tiny_config("paged", slots=2048, policy="vllm-v0"), trace)
    steps = v0.steps
    assert ((mixed.prefill_tokens > 0) & (mixed.decode_tokens > 0)).any()  # v1 mixes
    assert not ((steps.prefill_tokens > 0) & (steps.decode_tokens > 0)).any()
    assert (v0.requests.status == "completed").all()


def test_sarathi_keeps_its_chunk_and_never_stalls_a_decode(tiny_config, make_trace):
    # Short requests decode while long prompts arrive and prefill chunk by chunk beside them.
    trace = make_trace([20, 20, 2000, 20, 1500], [60, 60, 20, 40, 10],
                       arrivals=[0.0, 0.0, 0.01, 0.02, 0.03])
    config = tiny_config("paged", slots=8192, max_num_seqs=16, policy="sarathi", chunk_size=64)
    result, steps = _watched(config, trace)
    assert (result.requests.status == "completed").all()
    assert (result.steps.batch_tokens <= 64).all()
    assert ((result.steps.prefill_tokens > 0) & (result.steps.decode_tokens > 0)).any()
    for batch, ready in steps:
        decoded = {s.seq_id for s in batch.seqs if not s.is_prefill}
        assert ready <= decoded  # no preemption here, so every ready sample decodes


def test_edf_admits_the_earliest_deadline_first(tiny_config, make_trace):
    # One request runs; a long prompt then a short one wait. FCFS admits the long one first;
    # EDF the short one, whose TTFT deadline (arrival + SLO + per-token allowance) is earlier.
    trace = make_trace([50, 3000, 10], [30, 5, 5], arrivals=[0.0, 0.001, 0.002])
    kwargs = dict(slots=8192, max_num_seqs=1, ttft_slo_s=1.0, ttft_slo_s_per_token=1e-3)
    fcfs = simulate(tiny_config("paged", **kwargs), trace).requests
    edf = simulate(tiny_config("paged", policy="edf", **kwargs), trace).requests
    assert fcfs.admit_s[1] < fcfs.admit_s[2]
    assert edf.admit_s[2] < edf.admit_s[1]


@pytest.mark.parametrize("policy", SCHEDULING_POLICIES)
@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_decode_runs_change_nothing_under_any_policy(tiny_config, random_trace, policy,
                                                     preemption):
    trace = random_trace(np.random.default_rng(11), 50, max_output=150, max_n=2)
    config = tiny_config("paged", slots=1024, policy=policy, preemption=preemption,
                         max_num_seqs=32, chunk_size=128, swap_space_bytes=300 * 131072)
    fast = simulate(config, trace)
    slow = simulate(config, trace, decode_runs=False)
    pd.testing.assert_frame_equal(fast.steps, slow.steps)
    pd.testing.assert_frame_equal(fast.requests, slow.requests)
    assert fast.summary["preemptions"] > 0


def test_a_sarathi_chunk_below_max_num_seqs_is_refused():
    with pytest.raises(ConfigError, match="chunk_size"):
        SchedulerConfig(policy="sarathi", chunk_size=64, max_num_seqs=128)
