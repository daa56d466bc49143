"""The engine under a sliding window: the allocator told after every step, blocks the next
queries read always held, KV per sequence bounded by the window, steps priced by the keys read."""
from __future__ import annotations

import numpy as np
import pytest

from allocators.base import NO_BLOCK
from harness.engine.batch import Batch
from harness.engine.executor import CostModelExecutor
from harness.engine.loop import Engine, simulate

WINDOW = 64


class _WindowCheck:
    """Prices steps as the cost model does and checks that every block the step's queries read
    (from the first query's window start on) and every block a swap moves is held."""

    name = "window-check"
    device = None
    needs_layouts = True

    def __init__(self, config, geometry):
        self.inner = CostModelExecutor(config, geometry)
        self.window = config.model.sliding_window
        self.block_size = geometry.block_size
        self.released = 0  # block-table entries seen let go

    def _held(self, table: tuple[int, ...], first: int, stop: int) -> None:
        bs = self.block_size
        assert NO_BLOCK not in table[first // bs : -(-stop // bs)], (first, stop, table)
        self.released += table[: first // bs].count(NO_BLOCK)

    def step(self, batch: Batch) -> float:
        for op in (*batch.swap_out, *batch.swap_in):
            self._held(op.block_table, op.first_token, op.num_tokens)
        for seq in batch.seqs:
            self._held(seq.block_table, max(0, seq.start - self.window + 1), seq.context_tokens)
        return self.inner.step(batch)


@pytest.mark.parametrize("allocator", ["static", "paged", "segmented", "hybrid"])
@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_what_the_next_queries_read_is_always_held(tiny_config, random_trace, allocator,
                                                   preemption):
    trace = random_trace(np.random.default_rng(5), 40, max_prompt=300, max_output=300,
                         rate_per_s=40.0, max_n=2)
    config = tiny_config(allocator, slots=2048, preemption=preemption, window=WINDOW,
                         swap_space_bytes=4000 * 131072)
    engine = Engine(config, trace, executor_factory=_WindowCheck)
    result = engine.run()
    assert result.summary["completed"] == len(trace)
    assert result.summary["preemptions"] > 0  # the budget presses: swaps and recomputes ran
    if allocator != "static":
        assert engine.executor.released > 0


@pytest.mark.parametrize("allocator, most_stale", [
    ("paged", 15), ("hybrid", 15), ("segmented", 0)])
def test_a_sequence_holds_its_window_and_less_than_a_unit_more(tiny_config, make_trace,
                                                              allocator, most_stale):
    trace = make_trace([100] * 4, [400] * 4)
    result = simulate(tiny_config(allocator, slots=8192, window=WINDOW), trace)
    decoding = result.steps[result.steps["prefill_tokens"] == 0]
    held = decoding[["live", "stale", "reserved", "internal"]].sum(axis=1)
    per_seq = held / decoding["running"]
    assert per_seq.max() <= WINDOW + 2 * 16
    assert (decoding["live"] <= decoding["running"] * WINDOW).all()
    assert (decoding["stale"] <= decoding["running"] * most_stale).all()
    assert result.summary["completed"] == 4


def test_static_holds_every_passed_token_as_stale(tiny_config, make_trace):
    trace = make_trace([100] * 4, [400] * 4)
    runs = {window: simulate(tiny_config("static", slots=8192, window=window), trace)
            for window in (None, WINDOW)}
    full, windowed = runs[None].steps, runs[WINDOW].steps
    assert (full["stale"] == 0).all()
    last = windowed.iloc[-1]
    assert last["live"] <= last["running"] * WINDOW
    assert last["stale"] + last["live"] == full.iloc[-1]["live"]  # the same tokens written
    summary = runs[WINDOW].summary  # most written tokens lie behind the window
    assert summary["waste_stale"] > summary["utilization_mean"] > 0
    assert runs[WINDOW].summary["peak_running"] == runs[None].summary["peak_running"]


def test_the_window_bounds_what_a_step_reads(tiny_config, make_trace):
    """Long contexts: decode steps read WINDOW keys per sequence, so they cost less."""
    trace = make_trace([6000] * 2, [300] * 2)
    summaries = {window: simulate(tiny_config("paged", slots=20000, window=window),
                                  trace).summary for window in (None, 512)}
    assert summaries[512]["mean_step_ms"] < summaries[None]["mean_step_ms"]
    assert summaries[512]["throughput_tok_s"] > summaries[None]["throughput_tok_s"]


def test_windowed_runs_repeat_byte_for_byte(tiny_config, random_trace, tmp_path):
    from harness.engine.recorder import write_run

    trace = random_trace(np.random.default_rng(9), 30, max_output=200, max_n=2)
    config = tiny_config("hybrid", slots=2048, window=WINDOW)
    for name in ("a", "b"):
        write_run(simulate(config, trace), tmp_path / name)
    for file in ("steps.parquet", "requests.parquet", "run.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_a_step_counts_the_keys_its_queries_read():
    from itertools import product

    for start, num, window in product(range(0, 40, 7), (1, 5, 33), (None, 1, 8, 30)):
        batch = Batch()
        batch.add_prefill(0, 0, start, num, samples=True, window=window)
        batch.add_decode(1, 1, start + num, window=window)
        reads = [p + 1 if window is None else min(p + 1, window)
                 for p in range(start, start + num)]
        assert batch.prefill_attention_pairs == sum(reads)
        first_key = start + 1 - reads[0]  # the first query's window start
        assert batch.prefill_context_tokens == start + num - first_key
        assert batch.decode_context_tokens == batch.decode_max_context == reads[-1]


def test_a_request_that_fits_only_through_its_window_runs(tiny_config, make_trace):
    """Full attention rejects what can never fit; the window's share of it can run."""
    trace = make_trace([100, 100], [3000, 50], n=[2, 1])
    runs = {window: simulate(tiny_config("paged", slots=1024, window=window), trace)
            for window in (None, WINDOW)}
    assert runs[None].requests["status"].tolist() == ["rejected", "completed"]
    assert f"needs at least {100 + 2 * 2999} KV slots" in runs[None].requests["reason"][0]
    assert runs[WINDOW].requests["status"].tolist() == ["completed", "completed"]
