"""The host tier on the executor: blocks copied to host memory come back with the values written,
and a run that restores prefix blocks from the host samples the tokens of a run without it."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from harness.engine.executor import KVGeometry  # noqa: E402
from harness.engine.loop import simulate  # noqa: E402
from harness.gpu.executor import GpuExecutor  # noqa: E402
from harness.gpu.host_tier import HostTierBlocks, block_runs  # noqa: E402
from harness.gpu.kv_pool import KVPool  # noqa: E402
from harness.gpu.run import run_on_device  # noqa: E402
from harness.model.budget import bytes_per_token  # noqa: E402
from harness.model.config import AllocatorConfig, RunConfig, SchedulerConfig  # noqa: E402
from harness.model.presets import model_preset  # noqa: E402
from workloads.trace import make_trace  # noqa: E402


def test_block_runs_split_at_every_gap():
    assert block_runs(np.array([5, 0, 1, 2, 7, 8, 4])) == [(0, 1, 5), (1, 4, 0), (4, 6, 7),
                                                           (6, 7, 4)]


def test_blocks_round_trip_through_the_host_tier():
    bs = 4
    pool = KVPool(KVGeometry(bs, 8, 64, 8), num_layers=2, num_kv_heads=2, head_dim=8,
                  dtype=torch.float32, device="cpu")
    pool.sync([0, 1], [])
    tier = HostTierBlocks(8, pool)
    assert tier.allocated_bytes == 8 * 2 * 2 * bs * 2 * 8 * 4

    def slots(units):
        return (np.asarray(units)[:, None] * bs + np.arange(bs)).ravel()

    everything = pool.index(np.arange(64))
    pool.write_slots(everything, torch.randn(2, 2, 64, 2, 8))
    units, host = (1, 9, 10, 3), (5, 0, 1, 2)  # across both segments; two runs of host blocks
    written = pool.read_slots(pool.index(slots(units))).clone()
    tier.offload(units, host)
    pool.write_slots(everything, torch.zeros(2, 2, 64, 2, 8))
    back = (12, 2, 7, 8)
    tier.restore(back, host)
    assert torch.equal(pool.read_slots(pool.index(slots(back))), written)
    untouched = np.setdiff1d(np.arange(64), slots(back))
    assert not pool.read_slots(pool.index(untouched)).any()


def families_one_at_a_time(num: int, families: int = 3, chunk: int = 4):
    """Requests of a few prompt families, far apart in time (each ends before the next comes),
    cycling through the families so that a small cache has evicted a family by its return."""
    rng = np.random.default_rng(7)
    hashes = [tuple(100 * (rid % families) + i for i in range(4)) + (10**6 + rid,)
              for rid in range(num)]
    return make_trace(
        arrival_s=np.arange(num) * 100.0,
        prompt_tokens=np.array([5 * chunk - int(rng.integers(0, chunk)) for _ in range(num)]),
        output_tokens=rng.integers(3, 8, num),
        n=np.ones(num, np.int64),
        prefix_hashes=hashes,
        failed=np.zeros(num, bool),
        attrs={"name": "families", "source": "test", "format": "synthetic",
               "chunk_tokens": chunk},
    )


@pytest.mark.parametrize("allocator, params", [
    ("paged", {"block_size": 4}),
    ("segmented", {"segment_tokens": 16}),
    ("hybrid", {"block_size": 4, "segment_tokens": 16}),
])
def test_restored_prefixes_give_the_tokens_of_a_run_without_the_tier(tiny_decoder, allocator,
                                                                     params):
    trace = families_one_at_a_time(12)
    config = RunConfig(
        model=model_preset("tiny"), allocator=AllocatorConfig.of(allocator, **params),
        scheduler=SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=32),
        budget_slots_override=48,
    )
    plain, plain_executor = run_on_device(config, trace, tiny_decoder)
    host_bytes = 256 * bytes_per_token(config.model, 1)
    tiered, executor = run_on_device(dataclasses.replace(config, cpu_cache_bytes=host_bytes),
                                     trace, tiny_decoder)
    assert (tiered.requests["status"] == "completed").all()
    assert tiered.summary["prefix_hit_tokens_host"] > 0
    assert tiered.summary["prefill_tokens"] < plain.summary["prefill_tokens"]
    assert executor.details["host_restored_blocks"] > 0
    assert executor.outputs() == plain_executor.outputs()


class _TablesChecked(GpuExecutor):
    """The executor, checking after every step that the device's block tables are the host's
    (restored blocks sit in tables the step wrote, and sliding windows set NO_BLOCK entries)."""

    def step(self, batch):
        seconds = super().step(batch)
        device = self._device_tables.rows.cpu().numpy()
        assert np.array_equal(device, self._tables.array)
        return seconds


@pytest.mark.parametrize("allocator, params", [
    ("paged", {"block_size": 4}),
    ("segmented", {"segment_tokens": 16}),
    ("hybrid", {"block_size": 4, "segment_tokens": 16}),
])
def test_under_a_sliding_window_restored_prefixes_give_the_tokens_of_a_run_without_the_tier(
        tiny_decoder, allocator, params):
    """Prompt blocks let go by slides go to the host when evicted and come back on a hit; the
    tokens are those of the windowed run without a tier, and the device's tables follow."""
    from harness.gpu.model import Decoder

    window = 8  # below every prompt (16..20 tokens): slides let most of each prompt go
    decoder = Decoder(dataclasses.replace(tiny_decoder.config, sliding_window=window),
                      tiny_decoder.weights, tiny_decoder.backend)
    trace = families_one_at_a_time(12)
    config = RunConfig(
        model=dataclasses.replace(model_preset("tiny"), sliding_window=window),
        allocator=AllocatorConfig.of(allocator, **params),
        scheduler=SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=32),
        budget_slots_override=48,
    )
    made = []

    def factory(cfg, geometry):
        made.append(_TablesChecked(cfg, geometry, decoder=decoder, trace=trace))
        return made[-1]

    plain = simulate(config, trace, executor_factory=factory)
    host_bytes = 256 * bytes_per_token(config.model, 1)
    tiered = simulate(dataclasses.replace(config, cpu_cache_bytes=host_bytes), trace,
                      executor_factory=factory)
    assert (tiered.requests["status"] == "completed").all()
    assert tiered.summary["prefix_hit_tokens_host"] > 0
    assert tiered.summary["prefill_tokens"] < plain.summary["prefill_tokens"]
    assert made[1].details["host_restored_blocks"] > 0
    assert tiered.steps["stale"].max() > 0 or allocator == "segmented"
    assert made[1].outputs() == made[0].outputs()
