"""`kvharness profile`: the grid, the sequence ids it reuses, and the whole command at the tiny
shape on the CPU (the code path the GPU runs)."""
from __future__ import annotations

from harness.cli import main
from harness.gpu.profile import point_batch
from harness.gpu.profile_grid import (GridSpec, ProfilePoint, assign_seq_ids, profile_grid,
                                      skewed, spread)
from harness.model.fitted import fit
from reports.schema import PROFILE_COLUMNS, read_measurement


def test_the_grid_covers_every_kind_and_skips_what_does_not_fit():
    budget = 900_000
    points = profile_grid(GridSpec(), block_size=16, budget_slots=budget)
    kinds = {p.kind for p in points}
    assert kinds == {"decode", "prefill", "mixed"}
    assert all(p.slots(16) <= budget for p in points)
    decode = [p for p in points if p.kind == "decode"]
    assert max(len(p.decode_contexts) for p in decode) == 256
    assert max(max(p.decode_contexts) for p in decode) > 131072  # the spread around 128k
    assert not any(len(p.decode_contexts) == 256 and sum(p.decode_contexts) > budget
                   for p in decode)
    prefill = [p for p in points if p.kind == "prefill"]
    assert {p.prefill_tokens for p in prefill} == {16, 64, 256, 1024, 4096, 8192}
    assert {p.prefill_start for p in prefill} == {0, 1024, 4096, 16384, 65536}
    assert all(p.tokens <= 8192 and len(p.lengths) <= 256 for p in points)  # the scheduler's


def test_the_grid_packs_fresh_prompts_into_large_steps_beside_up_to_max_num_seqs_decodes():
    """As many prompts as fit the step's tokens; beside 256 decodes, 7 prompts and 249 decodes
    (max_num_seqs 256 sequences)."""
    budget = 900_000
    points = profile_grid(GridSpec(), block_size=16, budget_slots=budget)
    packed = [p for p in points if p.prefill_seqs > 1]
    assert {(p.kind, len(p.decode_contexts)) for p in packed} == {
        ("prefill", 0), ("mixed", 32), ("mixed", 128), ("mixed", 249)}
    for p in packed:
        assert p.prefill_tokens == 1024 and p.prefill_start == 0
        assert 8192 - 1024 < p.tokens <= 8192  # as many prompts as fit
        assert p.slots(16) <= budget
    # 256 decodes of 8k-token contexts do not fit the budget; of 1k-token ones they do.
    assert [max(p.decode_contexts) for p in packed if len(p.decode_contexts) == 249] == [1536]


def test_the_grid_holds_skewed_decodes_at_small_cost():
    """One long sequence among short ones, at batches on both sides of where the split-KV
    kernel stops splitting, for a few more points than the even grid."""
    budget = 900_000
    points = profile_grid(GridSpec(), block_size=16, budget_slots=budget)
    even = profile_grid(GridSpec(skewed_batches=()), block_size=16, budget_slots=budget)
    skew = [p for p in points if p not in even]
    assert all(p.kind == "decode" and p.slots(16) <= budget for p in skew)
    assert {len(p.decode_contexts) for p in skew} == {4, 16, 32, 64, 128, 256}
    assert {max(p.decode_contexts) for p in skew} == {8192, 65536}
    assert all(sorted(p.decode_contexts)[:-1] == [1024] * (len(p.decode_contexts) - 1)
               for p in skew)
    assert len(points) - len(even) == len(skew) <= 0.15 * len(even)
    assert skewed(10, 50, 3) == (50, 10, 10)


def test_spread_is_ragged_around_the_mean():
    assert spread(1000, 1) == (1000,)
    values = spread(1000, 5)
    assert min(values) == 500 and max(values) == 1500 and sum(values) == 5000


def test_reused_sequence_ids_never_grow_and_are_distinct_within_a_point():
    points = profile_grid(GridSpec(), block_size=16, budget_slots=900_000)
    ids, first = assign_seq_ids(points)
    held = list(first)
    for point, point_ids in zip(points, ids):
        assert len(set(point_ids)) == len(point_ids) == len(point.lengths)
        for sid, length in zip(point_ids, point.lengths):
            assert length <= held[sid]
            held[sid] = length
    assert len(first) < sum(len(p.lengths) for p in points) / 4  # ids are reused


def test_a_point_with_a_prefill_gives_its_last_ids_to_the_chunks():
    point = ProfilePoint("mixed", (10, 20), 5, 7)
    assert point.lengths == (10, 20, 12)
    assert point.slots(16) == 16 + 32 + 16
    packed = ProfilePoint("mixed", (10,), 0, 7, prefill_seqs=3)
    assert packed.lengths == (10, 7, 7, 7) and packed.tokens == 22
    ids = [4, 5, 6, 9]
    batch = point_batch(packed, ids, _Layouts())
    assert [(s.seq_id, s.is_prefill) for s in batch.seqs] == [(4, False)] + [
        (i, True) for i in (5, 6, 9)]
    assert batch.prefill_tokens == 21 and batch.decode_tokens == 1


class _Layouts:
    """An allocator's layout() for point_batch: an empty block table for every sequence."""

    def layout(self, seq_id):
        return type("Layout", (), {"block_table": []})()


def test_quick_profile_on_the_cpu_writes_a_table_the_model_fits(tmp_path, capsys):
    code = main(["profile", "--model", "tiny", "--out", str(tmp_path), "--quick",
                 "--repeats", "2", "--dtype", "float32", "--device", "cpu", "--block-sizes",
                 "4,16"])
    assert code == 0
    measurement = read_measurement(tmp_path / "profile_tiny_cpu.csv")
    assert {"device", "torch", "date", "command", "model"} <= set(measurement.header)
    table = measurement.table
    assert list(table.columns) == list(PROFILE_COLUMNS)
    assert set(table.kind) == {"decode", "prefill", "mixed"}
    decode = table[table.decode_tokens > 0]
    mean = decode.decode_context_tokens / decode.decode_tokens
    assert (decode.decode_max_context >= mean).all()
    assert (decode.decode_max_context > 1.6 * mean).any()  # the skewed point
    assert set(table.block_size) == {4, 16}
    assert (table.measured_ms > 0).all()
    assert (table.min_ms <= table.measured_ms).all() and (table.repeats == 2).all()
    model = fit(table, block_size=4)
    assert model.block_size == 4 and model.overhead_s >= 0
    assert "points in" in capsys.readouterr().out


def test_a_tensor_parallel_profile_times_the_same_grid_over_its_ranks(tmp_path):
    """Two gloo ranks on the CPU: rank 0 measures, the other builds each block size's executor
    from the setup it is sent and steps every batch, so the split decoder runs every point."""
    common = ["profile", "--model", "tiny", "--out", str(tmp_path), "--quick", "--repeats", "1",
              "--dtype", "float32", "--device", "cpu", "--block-sizes", "4,16"]
    assert main(common + ["--tp", "2"]) == 0 and main(common) == 0
    split = read_measurement(tmp_path / "profile_tiny_cpu_tp2.csv")
    whole = read_measurement(tmp_path / "profile_tiny_cpu.csv")
    assert (split.header["tp"], whole.header["tp"]) == ("2", "1")
    shape = ["kind", "block_size", "prefill_tokens", "decode_context_tokens"]
    assert split.table[shape].equals(whole.table[shape])
    assert (split.table.measured_ms > 0).all()
    assert fit(split.table, block_size=16).block_size == 16


def test_bad_block_sizes_are_a_usage_error(tmp_path):
    assert main(["profile", "--model", "tiny", "--out", str(tmp_path),
                 "--block-sizes", "0,x"]) == 2


def test_a_point_timer_hands_the_executor_the_segments_an_allocator_grows_and_releases(
        tiny_decoder):
    """Segmented backs segments as points allocate and lets them go as they free (none at the
    start): each point's steps find its KV in the executor's pool; static's reservations time
    alike."""
    import dataclasses

    from allocators import spec_of
    from harness.engine.executor import KVGeometry
    from harness.gpu.executor import GpuExecutor
    from harness.gpu.profile import PointTimer, profile_trace
    from harness.model.config import AllocatorConfig, RunConfig
    from harness.model.planner import run_params
    from harness.model.presets import model_preset

    points = [ProfilePoint("decode", (300,) * 3), ProfilePoint("decode", (40,)),
              ProfilePoint("mixed", (200, 90), 0, 24)]
    model = dataclasses.replace(model_preset("tiny"), max_model_len=512)
    for name in ("segmented", "static"):
        config = RunConfig(model=model, allocator=AllocatorConfig.of(name),
                           budget_slots_override=4096)
        allocator = spec_of(name).build(4096, run_params(config))
        seq_ids, first = assign_seq_ids(points)
        executor = GpuExecutor(config, KVGeometry(allocator.block_size,
                                                  allocator.blocks_per_segment, 4096),
                               decoder=tiny_decoder, trace=profile_trace(first))
        timer = PointTimer(executor, allocator, bytes_per_token=64, repeats=1, warmup=1)
        # A step whose slots lie in a segment the pool does not hold raises.
        rows = [timer.measure(point, ids) for point, ids in zip(points, seq_ids)]
        assert [r["decode_tokens"] for r in rows] == [3, 1, 2]
        assert [r["measured_ms"] > 0 for r in rows] == [True] * 3
