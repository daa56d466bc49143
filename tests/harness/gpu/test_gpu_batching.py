"""build_step: the vectorised step layout equals the plain per-sequence construction."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from allocators import make_allocator  # noqa: E402
from harness.gpu.batching import (  # noqa: E402
    DecodeWork, PrefillWork, layout_step, slots_of, to_device,
)
from harness.gpu.device_tables import DeviceTables  # noqa: E402
from harness.gpu.host_state import TableRows, TokenStore  # noqa: E402
from harness.engine.executor import KVGeometry  # noqa: E402
from harness.gpu.kv_pool import KVPool  # noqa: E402


def test_mixed_step_rows_slots_and_prefill_batch():
    bs = 4
    alloc = make_allocator("paged", 256, block_size=bs)
    pool = KVPool(KVGeometry(bs, alloc.blocks_per_segment, 256), num_layers=1, num_kv_heads=1,
                  head_dim=16, dtype=torch.float32, device="cpu")
    rng = np.random.default_rng(0)
    # (start, context, sampled rows): the middle chunk samples its last 3 rows, as a
    # verification of drafts samples every row.
    spans = [(0, 5, 1), (8, 19, 3), (3, 4, 1)]
    work, decode_tables, prefill_tables = [], [], []
    for sid, (start, context, samples) in enumerate(spans):
        alloc.allocate(sid, context)
        table = np.asarray(alloc.layout(sid).block_table, np.int64)
        tokens = rng.integers(1, 100, context - start)
        work.append(PrefillWork(sid, tokens, start, context, samples))
        prefill_tables.append(table)
    decode_lens = np.array([7, 1])
    for sid, n in zip((10, 11), decode_lens):
        alloc.allocate(sid, int(n))
        decode_tables.append(np.asarray(alloc.layout(sid).block_table, np.int64))
    pool.sync(list(alloc.segments()), [])
    decode = DecodeWork([10, 11], np.array([5, 6]), decode_lens)
    all_tables = prefill_tables + decode_tables
    rows = TableRows(rows=2, width=2)  # both grow
    ids = np.array(rows.update([0, 1, 2, 10, 11], [tuple(t.tolist()) for t in all_tables]))
    device_tables = DeviceTables(rows, torch.device("cpu"))
    device_tables.stage()
    device_tables.sync()
    host = layout_step(work, decode, ids, rows.array, bs)
    assert host.table_width == 16  # 5 blocks at most, rounded up
    step = to_device(host, pool, device_tables, torch.device("cpu"), by_segment=False)
    sampled = host.sampled
    assert step.slot_mapping.parts == ()

    positions = [np.arange(s, c) for s, c, _ in spans] + [decode_lens - 1]
    tables = all_tables
    rows = [np.full(len(p), i) for i, p in enumerate(positions[:3])] + [np.array([3, 4])]
    pos = np.concatenate(positions)
    slots = np.concatenate([np.array([tables[r][p // bs] * bs + p % bs for r, p in
                                      zip(rr, pp)]) for rr, pp in zip(rows, positions)])
    assert step.positions.tolist() == pos.tolist()
    assert step.slot_mapping.slots.tolist() == slots.tolist()
    assert step.num_decode_rows == 2 and len(step.input_ids) == 5 + 11 + 1 + 2
    assert [(c.start, c.num_new, c.context) for c in step.prefills] == [(0, 5, 0), (5, 11, 8),
                                                                        (16, 1, 3)]
    batch = step.prefill_batch
    assert batch.query_starts.tolist() == [0, 5, 16, 17]
    assert batch.context_lens.tolist() == [5, 19, 4]
    assert batch.block_tables.dtype == torch.int32 and batch.block_tables.shape[1] % 16 == 0
    assert batch.block_tables[1, :5].tolist() == tables[1][:5].tolist()
    assert step.context_lens.tolist() == [7, 1]
    assert step.block_tables[0, :2].tolist() == decode_tables[0][:2].tolist()
    assert step.logit_rows.tolist() == [4, 13, 14, 15, 16, 17, 18]
    assert sampled.tolist() == [0, 1, 1, 1, 2, 10, 11]


def test_table_rows_follow_tail_changes_and_reuse_rows():
    rows = TableRows(rows=1, width=1)
    [first] = rows.update([7], [(4, 5)]).tolist()
    # Copy-on-write of the last block, then a new one; a second sequence grows the array.
    a, b = rows.update([7, 8], [(4, 9, 10), (1,)]).tolist()
    assert a == first and b != a
    assert rows.array[[a, b], :3].tolist() == [[4, 9, 10], [1, 0, 0]]
    rows.take_changes()
    rows.update([7, 8], [(4, 9, 10), (1,)])  # the same tables, new tuples: nothing written
    assert rows.take_changes()[0].tolist() == []
    rows.update([7], [(4,)])  # truncated
    rows.drop(7)
    assert rows.update([9], [(2, 3)]).tolist() == [a]
    assert rows.array[a, :2].tolist() == [2, 3]


@pytest.mark.parametrize("staged", [0, 8])  # changes sent from pageable memory; some pinned
def test_device_tables_follow_the_host_rows_by_their_changes(staged):
    rows = TableRows(rows=2, width=16)
    device = DeviceTables(rows, torch.device("cpu"), changes=staged)
    # The array went over at construction: a first step with no new rows sends no whole array.
    assert device.generation == 1 and torch.equal(device.rows, torch.from_numpy(rows.array))
    device.stage()
    assert not device._whole
    rng = np.random.default_rng(3)
    tables = {sid: () for sid in range(3)}
    whole = 0
    for step in range(40):
        for sid in range(3):  # each table as an allocator changes one: at its tail
            if tables[sid] and rng.random() < 0.1:
                rows.drop(sid)
                tables[sid] = ()
                continue
            change = int(rng.integers(3))  # none (a new tuple), copy-on-write, extension
            kept = tables[sid][: max(len(tables[sid]) - (change == 1), 0)]
            grown = rng.integers(100, size=int(rng.integers(1, 6)) if change else 0)
            tables[sid] = kept + tuple(grown.tolist()) if kept or change else (7,)
        live = [sid for sid in range(3) if tables[sid]]
        ids = rows.update(live, [tables[s] for s in live])  # grows past 2 rows and 16 entries
        for row, sid in zip(ids, live):
            assert tuple(rows.array[row, : len(tables[sid])].tolist()) == tables[sid]
        device.stage()
        whole += device._whole
        # On odd steps a graph's replay applies the staged changes (DeviceTables.apply), after
        # what sync() sends itself.
        device.sync(graph_applies=step % 2 == 1)
        if step % 2:
            device.apply()
        assert torch.equal(device.rows, torch.from_numpy(rows.array))
    assert whole >= 1  # after growing past 2 rows and 16 entries
    live = [s for s in range(3) if tables[s]]
    ids = torch.tensor(rows.update(live, [tables[s] for s in live]))
    gathered = device.gather(ids, 16)
    assert gathered.tolist() == rows.array[ids.numpy(), :16].tolist()


def test_token_store_appends_forks_and_truncates():
    store = TokenStore(tokens=4)
    store.start(1, np.array([3, 4]), capacity=2)
    store.append([1], [5])  # past the capacity: moves
    store.fork(1, 2)  # past the arena: it grows
    store.append([2, 1], [6, 7])
    assert store.ids(1).tolist() == [3, 4, 5, 7] and store.ids(2).tolist() == [3, 4, 5, 6]
    store.truncate(2, 1)
    assert store.last([2, 1]).tolist() == [3, 7] and store.lengths([2, 1]).tolist() == [1, 4]
    store.extend(2, np.array([8, 9, 10, 11]))
    assert store.ids(2).tolist() == [3, 8, 9, 10, 11] and store.ids(1).tolist() == [3, 4, 5, 7]
    assert 2 in store and 3 not in store and store.seq_ids() == [1, 2]


@pytest.mark.parametrize("block_size", [1, 3, 16, 48, 256])
def test_slots_of_gives_each_positions_block_and_offset(block_size):
    rng = np.random.default_rng(block_size)
    table = rng.integers(0, 1 << 20, 64).astype(np.int32)
    positions = rng.integers(0, 64 * block_size, 500)
    expected = [int(table[p // block_size]) * block_size + int(p) % block_size for p in positions]
    assert slots_of(table, positions, block_size).tolist() == expected
