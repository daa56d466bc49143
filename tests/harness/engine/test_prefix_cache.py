"""Prefix-cache hits on a real hashed trace skip prefill work, and share only KV that holds the
very tokens they stand for."""
from __future__ import annotations

from functools import partial

import pytest

from harness.engine.batch import Batch
from harness.engine.executor import CostModelExecutor
from harness.model.config import AllocatorConfig, RunConfig, SchedulerConfig
from harness.engine.loop import Engine, simulate
from harness.model.presets import model_preset

workloads = pytest.importorskip("workloads")


@pytest.fixture(scope="module")
def mooncake():
    return workloads.take(workloads.load_trace("mooncake-conv"), 50)


@pytest.mark.parametrize("allocator", ["paged", "segmented", "hybrid"])
def test_prefix_hits_on_mooncake_reduce_prefill_tokens(mooncake, allocator):
    def run(enable):
        config = RunConfig(allocator=AllocatorConfig.of(allocator, enable_prefix_cache=enable))
        return simulate(config, mooncake).summary

    cached, uncached = run(True), run(False)
    assert uncached["prefix_hit_tokens"] == 0
    assert cached["prefix_hit_tokens"] > 0
    assert cached["prefill_tokens"] < uncached["prefill_tokens"]


@pytest.mark.parametrize("allocator", ["paged", "hybrid"])
def test_prefix_hit_tokens_never_exceed_the_prompt_under_preemption(allocator):
    """Preempted requests are admitted again and find their own blocks; that is not reuse."""
    trace = workloads.scale_rate(workloads.take(workloads.load_trace("mooncake-conv"), 200), 8)
    config = RunConfig(allocator=AllocatorConfig.of(allocator), budget_slots_override=40_000)
    requests = simulate(config, trace).requests
    assert requests["preemptions"].sum() > 0  # the case that used to count hits again
    assert (requests["prefix_hit_tokens"] <= requests["prompt_tokens"]).all()


class _KVNames:
    """An executor that keeps, instead of KV, the name of the token whose K/V each slot last
    received, and records every key a step's attention reads that does not hold its own
    token's (what a prefix-cache hit shares must be the same prompt tokens' KV, written in an
    earlier step or in this one, since an executor writes each layer's K/V before attention
    reads any). A prompt token inside the hashed chunks is named by the chunk hashes up to its
    own and its position, as harness.gpu.prompts draws equal tokens for equal names; any other
    token by its request and position (recomputed, a single sample repeats its tokens).
    Preemption by recompute and single samples only: no swaps, no forks."""

    name = "kv-names"
    device = None
    needs_layouts = True

    def __init__(self, trace, config, geometry) -> None:
        self.inner = CostModelExecutor(config, geometry)
        self.block_size = geometry.block_size
        self.segment_slots = geometry.block_size * geometry.blocks_per_segment
        self.hashes = trace["prefix_hashes"].tolist()
        self.prompts = trace["prompt_tokens"].tolist()
        self.chunk_tokens = trace.attrs["chunk_tokens"]
        self.memory: dict[int, tuple] = {}  # slot -> (token name, request that wrote it)
        self.wrong: list[tuple] = []  # (request, position, what its slot held)
        self.shared_reads = 0  # keys read that another request wrote

    def _name(self, rid: int, position: int) -> tuple:
        hashes, chunk = self.hashes[rid], self.chunk_tokens
        if hashes and position < self.prompts[rid] and position // chunk < len(hashes):
            return ("prompt", tuple(hashes[: position // chunk + 1]), position)
        return ("own", rid, position)

    def step(self, batch: Batch) -> float:
        assert not (batch.swap_out or batch.swap_in or batch.forks)
        bs, memory = self.block_size, self.memory
        for segment in batch.segments_released:  # what a new segment holds is not KV
            for slot in [s for s in memory if s // self.segment_slots == segment]:
                del memory[slot]
        for copy in batch.block_copies:
            for i in range(copy.num_tokens):
                memory[copy.dst * bs + i] = memory.get(copy.src * bs + i)
        slots = [[seq.block_table[p // bs] * bs + p % bs for p in range(seq.context_tokens)]
                 for seq in batch.seqs]
        for seq, slot in zip(batch.seqs, slots):
            for p in range(seq.start, seq.context_tokens):
                memory[slot[p]] = (self._name(seq.request_id, p), seq.request_id)
        for seq, slot in zip(batch.seqs, slots):
            for p in range(seq.context_tokens):
                held = memory.get(slot[p])
                if held is None or held[0] != self._name(seq.request_id, p):
                    self.wrong.append((seq.request_id, p, held))
                elif held[1] != seq.request_id:
                    self.shared_reads += 1
        return self.inner.step(batch)


UNITS = {"paged": {"block_size": 4}, "segmented": {"segment_tokens": 64},
         "hybrid": {"block_size": 4, "segment_tokens": 64}}


@pytest.mark.parametrize("allocator", ["paged", "segmented", "hybrid"])
def test_attention_reads_only_kv_written_for_its_own_tokens(chained_prefix_trace,
                                                           prefill_preemptions, allocator):
    """Prefix hits under recompute preemptions, some midway through a chunked prefill: every
    key a step reads holds its own token's KV, never KV a preempted prefill had yet to write,
    nor a recomputed request's generated tokens under its prompt's last, partial chunk."""
    trace = chained_prefix_trace(1, 10)
    config = RunConfig(
        model=model_preset("tiny"), allocator=AllocatorConfig.of(allocator, **UNITS[allocator]),
        scheduler=SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=8),
        budget_slots_override=112,
    )
    engine = Engine(config, trace, executor_factory=partial(_KVNames, trace))
    summary = engine.run().summary
    assert summary["preemptions"] > 0 and prefill_preemptions[0] > 0
    assert summary["prefix_hit_tokens"] > 0 and engine.executor.shared_reads > 0
    assert engine.executor.wrong == []
