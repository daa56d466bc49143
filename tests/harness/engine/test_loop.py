"""End-to-end behaviour of the engine on small traces with a small KV budget."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.engine.loop import Engine, simulate
from harness.model.config import AllocatorConfig
from harness.model.presets import model_preset
from harness.engine.batch import Batch, attended_keys
from harness.engine.recorder import write_run
from reports.schema import REQUEST_COLUMNS, STEP_COLUMNS, SUMMARY_KEYS
from harness.engine.swap import SwapSpace

STATUSES = {"completed", "rejected", "queued", "running"}


def _check_run(result, rows):
    requests, steps = result.requests, result.steps
    assert list(requests.columns) == list(REQUEST_COLUMNS)
    assert list(steps.columns) == list(STEP_COLUMNS)
    assert requests["request_id"].tolist() == list(range(rows))  # one final row per request
    assert set(requests["status"]) <= STATUSES
    s = result.summary
    assert s["completed"] + s["rejected"] + s["queued_at_end"] + s["running_at_end"] == rows
    rejected = requests[requests["status"] == "rejected"]
    assert (rejected["reason"] != "").all()
    assert (requests.loc[requests["status"] != "rejected", "reason"] == "").all()
    done = requests[requests["status"] == "completed"]
    assert (done["finish_s"] >= done["arrival_s"]).all()
    assert (done["ttft_s"].dropna() > 0).all()
    admitted = requests["admit_s"].dropna()
    assert admitted.is_monotonic_increasing  # first come, first served
    parts = steps[["live", "stale", "reserved", "internal", "cached", "free"]].sum(axis=1)
    assert (parts == steps["backed"]).all()
    assert (steps["backed"] <= steps["budget"]).all()


@pytest.mark.parametrize("allocator", ["static", "paged", "segmented", "hybrid"])
@pytest.mark.parametrize("preemption", ["recompute", "swap"])
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 30), max_n=st.sampled_from([1, 3]))
def test_every_request_ends_in_one_status(
    tiny_config, random_trace, allocator, preemption, seed, rows, max_n
):
    rng = np.random.default_rng(seed)
    trace = random_trace(rng, rows, max_prompt=400, max_output=80, max_n=max_n)
    config = tiny_config(allocator, slots=1024, preemption=preemption,
                         swap_space_bytes=300 * 131072)
    result = simulate(config, trace)
    _check_run(result, rows)
    assert result.summary["running_at_end"] == result.summary["queued_at_end"] == 0


def test_summary_has_exactly_the_contract_keys(tiny_config, make_trace):
    result = simulate(tiny_config(), make_trace([10, 20], [5, 5]))
    assert tuple(result.summary) == SUMMARY_KEYS


def test_same_seed_writes_byte_identical_files(tiny_config, random_trace, tmp_path, rng):
    trace = random_trace(rng, 60, max_n=2)
    config = tiny_config("hybrid", slots=2048, preemption="swap", swap_space_bytes=500 * 131072)
    for name in ("a", "b"):
        write_run(simulate(config, trace), tmp_path / name)
    for file in ("steps.parquet", "requests.parquet", "run.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_static_admits_fewer_concurrent_requests_than_paged(tiny_config, random_trace, rng):
    trace = random_trace(rng, 80, max_prompt=200, max_output=400, rate_per_s=200.0)
    static = simulate(tiny_config("static", slots=4096), trace).summary
    paged = simulate(tiny_config("paged", slots=4096), trace).summary
    assert static["peak_running"] < paged["peak_running"]
    assert static["completed"] == paged["completed"] == 80


def test_recompute_preemption_under_a_tight_budget_still_finishes_all(
    tiny_config, random_trace, rng
):
    trace = random_trace(rng, 40, max_prompt=300, max_output=300, rate_per_s=500.0)
    result = simulate(tiny_config("paged", slots=1024), trace)
    assert result.summary["preemptions"] > 0
    assert result.summary["completed"] == 40
    preempted = result.requests[result.requests["preemptions"] > 0]
    assert (preempted["status"] == "completed").all()


def test_the_victim_is_the_latest_admitted_request(tiny_config, make_trace):
    # 64 blocks of 16: three prompts take 60, and the fifth growth block preempts; the first
    # two then fit to the end (27 blocks each).
    trace = make_trace([320, 320, 320], [100, 100, 100], arrivals=[0.0, 0.001, 0.002])
    requests = simulate(tiny_config("paged", slots=1024), trace).requests
    assert list(requests["preemptions"] > 0) == [False, False, True]
    assert (requests["status"] == "completed").all()


def test_swap_mode_never_exceeds_its_swap_space(tiny_config, random_trace, rng):
    trace = random_trace(rng, 40, max_prompt=300, max_output=300, rate_per_s=500.0)
    swap_slots = 400
    config = tiny_config(
        "paged", slots=1024, preemption="swap", swap_space_bytes=swap_slots * 131072
    )
    engine = Engine(config, trace)
    result = engine.run()
    assert engine.scheduler.swap.slots == swap_slots
    assert 0 < engine.scheduler.swap.peak <= swap_slots
    assert result.steps["swapped"].max() > 0
    assert result.summary["completed"] == 40


def test_impossible_requests_are_rejected_with_a_reason(tiny_config, make_trace):
    trace = make_trace([100, 5000, 10, 10], [100, 10, 10, 10000], n=[1, 1, 40, 1])
    config = tiny_config("paged", slots=4096, max_model_len=8192, max_num_seqs=32)
    requests = simulate(config, trace).requests
    assert list(requests["status"]) == ["completed", "rejected", "rejected", "rejected"]
    reasons = list(requests["reason"])
    assert "the budget holds 4096" in reasons[1]
    assert "max_num_seqs 32" in reasons[2]
    assert "max_model_len 8192" in reasons[3]


def test_unchunked_prefill_rejects_prompts_past_the_token_budget(tiny_config, make_trace):
    trace = make_trace([100, 3000], [10, 10])
    config = tiny_config("paged", slots=8192, chunked_prefill=False, max_num_batched_tokens=2048)
    requests = simulate(config, trace).requests
    assert list(requests["status"]) == ["completed", "rejected"]
    assert "without chunked prefill" in requests["reason"][1]


def test_static_arena_alignment_rejects_what_fits_no_reservation(tiny_config, make_trace):
    # 1000 slots make 62 aligned blocks of 16 (992 slots): 995 tokens fit the budget, not the arena.
    trace = make_trace([900, 500], [96, 20])
    requests = simulate(tiny_config("static", slots=1000), trace).requests
    assert list(requests["status"]) == ["rejected", "completed"]
    assert "empty KV cache" in requests["reason"][0]


def test_requests_past_the_models_context_are_rejected_with_a_reason(tiny_config, make_trace):
    trace = make_trace([8000, 8000], [100, 300])  # llama3-8b serves 8,192 tokens
    requests = simulate(tiny_config("paged", slots=30000), trace).requests
    assert list(requests["status"]) == ["completed", "rejected"]
    assert requests["reason"][1] == "prompt + output = 8300 tokens > max_model_len 8192"


def test_static_reserves_the_models_context_unless_it_is_the_oracle(tiny_config, make_trace):
    trace = make_trace([100], [20])
    for oracle, reserved in ((False, 8192), (True, 128)):
        config = dataclasses.replace(
            tiny_config("static", slots=9000),
            allocator=AllocatorConfig.of("static", oracle=oracle))
        steps = simulate(config, trace).steps
        assert steps["backed"].iloc[0] - steps["free"].iloc[0] == reserved


def test_long_prompts_are_prefilled_in_chunks_of_the_token_budget(tiny_config, make_trace):
    trace = make_trace([20000], [3])
    config = tiny_config("paged", slots=30000, max_num_batched_tokens=8192)
    config = dataclasses.replace(config, model=model_preset("llama3.1-8b"))  # 128k context
    result = simulate(config, trace)
    assert list(result.steps["prefill_tokens"]) == [8192, 8192, 3616, 0, 0]
    assert list(result.steps["decode_tokens"]) == [0, 0, 0, 1, 1]


def test_parallel_samples_fork_after_prefill_and_each_counts_its_tokens(tiny_config, make_trace):
    trace = make_trace([100, 50], [20, 10], n=[4, 1])
    result = simulate(tiny_config("paged", slots=4096), trace)
    assert result.summary["output_tokens"] == 4 * 20 + 10
    assert result.summary["peak_running"] == 5
    assert (result.requests["status"] == "completed").all()


def test_failed_responses_only_prefill(tiny_config, make_trace):
    trace = make_trace([100, 10], [0, 5])
    requests = simulate(tiny_config(), trace).requests
    assert list(requests["status"]) == ["completed", "completed"]
    assert math.isnan(requests["first_token_s"][0]) and requests["finish_s"][0] > 0


def test_a_horizon_leaves_requests_queued_or_running(tiny_config, random_trace, rng):
    trace = random_trace(rng, 50, max_output=500, rate_per_s=100.0)
    config = tiny_config("paged", slots=2048)
    config = type(config)(**{**config.__dict__, "horizon_s": 0.3})
    result = simulate(config, trace)
    s = result.summary
    assert s["running_at_end"] > 0 and s["queued_at_end"] > 0
    _check_run(result, int((trace["arrival_s"] < 0.3).sum()))


class _Checking:
    """An executor that checks every batch against the allocator (set by the test)."""

    name = "checking"
    device = None
    needs_layouts = True

    def __init__(self, config, geometry):
        self.allocator = None
        self.steps = 0

    def step(self, batch: Batch) -> float:
        for seq in batch.seqs:
            length = self.allocator.length(seq.seq_id)
            if seq.is_prefill:
                assert seq.context_tokens <= length
            else:
                assert seq.num_new_tokens == 1 and seq.context_tokens == length
            assert seq.block_table == self.allocator.layout(seq.seq_id).block_table
        self.steps += 1
        return 0.01


def test_a_plugged_executor_sees_batches_that_match_the_allocator(tiny_config, random_trace, rng):
    trace = random_trace(rng, 30, max_n=3)
    engine = Engine(tiny_config("hybrid", slots=2048), trace, executor_factory=_Checking)
    engine.executor.allocator = engine.allocator
    result = engine.run()
    assert engine.executor.steps == len(result.steps) > 0
    assert np.allclose(np.diff(result.steps["time_s"]) >= 0.01 - 1e-12, True)
    assert result.info["executor"] == "checking"


@settings(max_examples=16, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(allocator=st.sampled_from(["static", "paged", "segmented", "hybrid"]),
       slots=st.sampled_from([1024, 8192]), seed=st.integers(0, 2**16),
       preemption=st.sampled_from(["recompute", "swap"]), window=st.sampled_from([None, 50]))
def test_decode_runs_change_nothing(tiny_config, random_trace, allocator, slots, seed, preemption,
                                    window, tmp_path_factory):
    """The decode-run shortcut (both executors take it) gives the results of scheduling every
    step through schedule(), under a sliding window too."""
    trace = random_trace(np.random.default_rng(seed), 60, max_output=200, rate_per_s=20.0,
                         max_n=2)
    config = tiny_config(allocator, slots=slots, preemption=preemption,
                         swap_space_bytes=2000 * 131072, window=window)
    out = tmp_path_factory.mktemp("runs")
    write_run(simulate(config, trace), out / "runs")
    write_run(simulate(config, trace, decode_runs=False), out / "steps")
    for file in ("steps.parquet", "requests.parquet"):
        assert (out / "runs" / file).read_bytes() == (out / "steps" / file).read_bytes()


class _Aggregates:
    """An executor that keeps each batch's decode aggregates, checking the longest context
    against the batch's sequences; a step's time grows with it."""

    name = "aggregates"
    device = None
    needs_layouts = False

    def __init__(self, config, geometry):
        self.window = config.model.sliding_window
        self.rows = []

    def step(self, batch: Batch) -> float:
        keys = [attended_keys(s.context_tokens, self.window) for s in batch.seqs
                if not s.is_prefill]
        assert batch.decode_max_context == max(keys, default=0)
        assert batch.decode_context_tokens == sum(keys)
        self.rows.append((batch.decode_tokens, batch.decode_context_tokens,
                          batch.decode_max_context))
        return 0.01 + 1e-6 * batch.decode_max_context


@settings(max_examples=16, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(allocator=st.sampled_from(["static", "paged", "segmented", "hybrid"]),
       slots=st.sampled_from([1024, 8192]), seed=st.integers(0, 2**16),
       window=st.sampled_from([None, 50]))
def test_decode_runs_hand_over_the_longest_context_of_every_step(
        tiny_config, random_trace, allocator, slots, seed, window):
    """A decode run's batches carry the aggregates that schedule() gives the same steps."""
    trace = random_trace(np.random.default_rng(seed), 40, max_output=200, rate_per_s=20.0,
                         max_n=2)
    config = tiny_config(allocator, slots=slots, window=window)
    rows = {}
    for runs in (True, False):
        engine = Engine(config, trace, executor_factory=_Aggregates, decode_runs=runs)
        engine.run()
        rows[runs] = engine.executor.rows
    assert rows[True] == rows[False]
    assert max(row[2] for row in rows[True]) > 0


def test_an_executor_without_bulk_pricing_runs_every_decode_run_step(tiny_config, random_trace):
    trace = random_trace(np.random.default_rng(3), 40, max_output=100, rate_per_s=5.0)
    config = tiny_config("paged", slots=8192)
    engine = Engine(config, trace, executor_factory=_Checking)
    engine.executor.allocator = engine.allocator
    result = engine.run()
    assert engine.executor.steps == len(result.steps)


def test_swap_space_refuses_what_does_not_fit():
    space = SwapSpace(100)
    space.put(60)
    assert not space.fits(41)
    with pytest.raises(ValueError, match="do not fit"):
        space.put(41)
    space.take(60)
    assert space.used == 0 and space.peak == 60
