"""The prefix cache's host tier in the engine: hits counted per tier, copies in the batches, their
PCIe price, and a run without a tier left exactly as it was."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from harness.engine.batch import Batch
from harness.engine.executor import CostModelExecutor, KVGeometry
from harness.engine.loop import Engine, simulate
from harness.engine.recorder import write_run
from harness.model.budget import bytes_per_token
from harness.model.config import ConfigError, RunConfig
from reports.schema import (HOST_HIT_COLUMN, HOST_TIER_STEP_COLUMNS, HOST_TIER_SUMMARY_KEYS,
                            REQUEST_COLUMNS, STEP_COLUMNS, SUMMARY_KEYS)

CHUNK = 64
BYTES = bytes_per_token(RunConfig().model, 1)  # llama3-8b, as tiny_config


def families_trace(make_trace, seed: int, rows: int = 60, families: int = 8):
    """Requests sharing one of a few long prefixes (5..10 chunks) and ending in their own
    chunks, arriving faster than a small budget can keep every prefix cached."""
    rng = np.random.default_rng(seed)
    family = rng.integers(0, families, rows)
    shared = rng.integers(5, 11, families)
    own = rng.integers(1, 4, rows)
    hashes = [tuple(1000 * f + i for i in range(shared[f])) + tuple(
        10**6 * (rid + 1) + i for i in range(o)) for rid, (f, o) in enumerate(zip(family, own))]
    prompts = [len(h) * CHUNK - int(rng.integers(0, CHUNK)) for h in hashes]
    return make_trace(prompts, rng.integers(1, 40, rows), arrivals=np.sort(rng.uniform(0, 3, rows)),
                      hashes=hashes, chunk_tokens=CHUNK)


def tiered(config: RunConfig, host_tokens: int) -> RunConfig:
    return dataclasses.replace(config, cpu_cache_bytes=host_tokens * BYTES)


@pytest.mark.parametrize("allocator", ["paged", "segmented", "hybrid"])
def test_hits_split_by_tier_add_up_and_a_tier_saves_prefill(tiny_config, make_trace, allocator):
    trace = families_trace(make_trace, 0)
    base = tiny_config(allocator, slots=4096)
    off, on = simulate(base, trace), simulate(tiered(base, 16384), trace)
    assert tuple(off.summary) == SUMMARY_KEYS
    assert tuple(on.summary) == SUMMARY_KEYS + HOST_TIER_SUMMARY_KEYS
    s = on.summary
    for result in (off, on):
        assert set(result.requests["status"]) <= {"completed", "rejected", "queued"}
    prompt = int(on.requests.loc[on.requests["admit_s"].notna(), "prompt_tokens"].sum())
    assert s["prefix_hit_tokens_gpu"] + s["prefix_hit_tokens_host"] + s["prefix_miss_tokens"] == \
        prompt
    assert s["prefix_hit_tokens_gpu"] + s["prefix_hit_tokens_host"] == s["prefix_hit_tokens"]
    assert s["prefix_hit_rate_gpu"] + s["prefix_hit_rate_host"] + s["prefix_miss_rate"] == \
        pytest.approx(1.0)
    assert s["prefix_hit_tokens_host"] > 0 and s["host_offload_bytes"] > 0
    # Restores also bring back what preempted requests find of their own prompt.
    assert s["host_restore_bytes"] >= s["prefix_hit_tokens_host"] * BYTES
    assert s["prefix_hit_tokens"] > off.summary["prefix_hit_tokens"]
    assert s["prefill_tokens"] < off.summary["prefill_tokens"]
    assert (on.requests[HOST_HIT_COLUMN] <= on.requests["prefix_hit_tokens"]).all()


def test_without_a_tier_the_files_keep_their_columns_and_config(tiny_config, make_trace,
                                                                 tmp_path):
    trace = families_trace(make_trace, 1)
    result = simulate(tiny_config("paged", slots=4096), trace)
    assert list(result.steps.columns) == list(STEP_COLUMNS)
    assert list(result.requests.columns) == list(REQUEST_COLUMNS)
    assert "cpu_cache_bytes" not in result.config.to_dict()
    on = simulate(tiered(tiny_config("paged", slots=4096), 8192), trace)
    assert list(on.steps.columns) == [*STEP_COLUMNS, *HOST_TIER_STEP_COLUMNS]
    assert RunConfig.from_dict(on.config.to_dict()) == on.config


@pytest.mark.parametrize("allocator", ["paged", "segmented"])
def test_a_tiered_run_is_reproducible_and_decode_runs_change_nothing(
        tiny_config, make_trace, allocator, tmp_path):
    trace = families_trace(make_trace, 2)
    config = tiered(tiny_config(allocator, slots=4096), 6000)
    for name, runs in (("a", True), ("b", True), ("c", False)):
        write_run(simulate(config, trace, decode_runs=runs), tmp_path / name)
    for file in ("steps.parquet", "requests.parquet", "run.json"):
        first = (tmp_path / "a" / file).read_bytes()
        assert first == (tmp_path / "b" / file).read_bytes()
        if file != "run.json":
            assert first == (tmp_path / "c" / file).read_bytes()


class _Checking:
    """An executor that checks each batch's host copies against the allocator."""

    name = "checking"
    device = None
    needs_layouts = True

    def __init__(self, config, geometry):
        self.geometry = geometry
        self.allocator = None
        self.restored = 0

    def step(self, batch: Batch) -> float:
        bs = self.geometry.block_size
        tables = {seq.seq_id: seq.block_table for seq in batch.seqs}
        offloaded = restored = 0
        for copy in batch.host_copies:
            assert 0 <= copy.copies_before <= len(batch.block_copies)
            assert all(0 <= b < self.geometry.host_tier_blocks for b in copy.host_blocks)
            if copy.to_host:
                offloaded += len(copy.units) * bs
                continue
            restored += len(copy.units) * bs
            # Restored into the blocks of a sequence this step prefills, after its hits.
            assert any(set(copy.units) <= set(table) for table in tables.values())
        assert (offloaded, restored) == (batch.host_offload_tokens, batch.host_restore_tokens)
        self.restored += restored
        return 0.01


def test_batches_carry_the_host_copies_the_allocator_decided(tiny_config, make_trace):
    engine = Engine(tiered(tiny_config("hybrid", slots=4096), 8192),
                    families_trace(make_trace, 3), executor_factory=_Checking)
    assert engine.executor.geometry.host_tier_blocks == 8192 // 16
    result = engine.run()
    assert engine.executor.restored == result.steps["host_restore_tokens"].sum() > 0


def test_pcie_copies_of_the_tier_are_priced_like_swaps(tiny_config):
    config = tiny_config("paged")
    executor = CostModelExecutor(config, KVGeometry(16, 256, 4096, 64), roofline=True)
    plain = Batch(prefill_tokens=64, prefill_context_tokens=64, prefill_attention_pairs=2080)
    copied = dataclasses.replace(plain, host_offload_tokens=32, host_restore_tokens=96)
    swapped = dataclasses.replace(plain, swap_in_tokens=128)
    extra = executor.step(copied) - executor.step(plain)
    assert extra == pytest.approx(128 * BYTES / config.gpu.pcie_bytes_s)
    assert executor.step(copied) == executor.step(swapped)


@pytest.mark.parametrize("allocator, cpu_bytes, match", [
    ("static", 1 << 30, "no prefix cache"),
    ("paged", BYTES // 2, "no token"),
    ("paged", -1, "cpu_cache_bytes"),
])
def test_a_tier_that_cannot_serve_the_run_is_a_config_error(tiny_config, make_trace, allocator,
                                                            cpu_bytes, match):
    with pytest.raises(ConfigError, match=match):
        config = dataclasses.replace(tiny_config(allocator), cpu_cache_bytes=cpu_bytes)
        simulate(config, families_trace(make_trace, 4, rows=4))


@pytest.mark.parametrize("allocator", ["paged", "segmented", "hybrid"])
def test_under_a_sliding_window_slid_prefixes_reach_the_tier_and_usage_adds_up(
        tiny_config, make_trace, allocator, tmp_path):
    """Prompt entries a slide lets go wait in the GPU's LRU and go to the host when evicted;
    the copies ride in the batches, the hits add up, the stale figure closes every step's
    conservation, and decode runs change nothing."""
    trace = families_trace(make_trace, 0)
    base = tiny_config(allocator, slots=4096, window=256)
    engine = Engine(tiered(base, 16384), trace, executor_factory=_Checking)
    on = engine.run()
    off = simulate(base, trace)
    s = on.summary
    assert s["prefix_hit_tokens_host"] > 0 and s["host_offload_bytes"] > 0
    assert engine.executor.restored == on.steps["host_restore_tokens"].sum()
    assert s["prefix_hit_tokens_gpu"] + s["prefix_hit_tokens_host"] == s["prefix_hit_tokens"]
    assert s["prefix_hit_tokens"] > off.summary["prefix_hit_tokens"]
    steps = on.steps
    assert (steps["backed"] == steps[["live", "stale", "reserved", "internal", "cached",
                                      "free"]].sum(axis=1)).all()
    assert steps["stale"].max() > 0
    for name, runs in (("a", True), ("b", False)):
        write_run(simulate(tiered(base, 16384), trace, decode_runs=runs), tmp_path / name)
    for file in ("steps.parquet", "requests.parquet"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
