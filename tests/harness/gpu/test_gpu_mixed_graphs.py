"""The padded inputs of a mixed-step graph give the eager step's logits (no capture: on a CPU the
Triton interpreter runs the forward the graph would hold), a verification's every row
included."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from allocators import make_allocator  # noqa: E402
from harness.engine.executor import KVGeometry  # noqa: E402
from harness.gpu.batching import DecodeWork, PrefillWork, layout_step, to_device  # noqa: E402
from harness.gpu.kv_pool import KVPool  # noqa: E402
from harness.gpu.mixed_graphs import MixedBuffers, UnifiedRows, token_buckets  # noqa: E402


def test_token_buckets_cover_every_size_up_to_the_cap():
    buckets = token_buckets(2048)
    assert buckets[-1] == 2048 and buckets == sorted(set(buckets))
    assert all(b % 64 == 0 for b in buckets if b >= 64)
    assert token_buckets(100)[-1] == 100


def _mixed_step(pool_dtype, backend, config):
    bs = 4
    alloc = make_allocator("paged", 512, block_size=bs)
    pool = KVPool(KVGeometry(bs, alloc.blocks_per_segment, 512), num_layers=config.num_layers,
                  num_kv_heads=config.num_kv_heads, head_dim=config.head_dim, dtype=pool_dtype,
                  device="cpu", prepare=backend.prepare)
    rng = np.random.default_rng(1)
    # (start, context, sampled rows): a fresh prompt, a later chunk, a verification of 3 drafts
    spans = [(0, 9, 1), (6, 13, 0), (10, 14, 4)]
    work, tables = [], []
    for sid, (start, context, samples) in enumerate(spans):
        alloc.allocate(sid, context)
        tables.append(alloc.layout(sid).block_table)
        work.append(PrefillWork(sid, rng.integers(1, 200, context - start), start, context,
                                samples))
    decode_lens = np.array([11, 3])
    for sid, n in zip((10, 11), decode_lens):
        alloc.allocate(sid, int(n))
        tables.append(alloc.layout(sid).block_table)
    pool.sync(list(alloc.segments()), [])
    # The context before each chunk is read, never written here: give it values, not whatever
    # an uninitialised tensor holds (NaN at times).
    slots = np.arange(alloc.usage().backed)
    gen = torch.Generator().manual_seed(0)
    pool.write_slots(pool.index(slots), torch.randn(
        config.num_layers, 2, len(slots), config.num_kv_heads, config.head_dim, generator=gen,
        dtype=pool_dtype))
    padded = np.zeros((5, 16), np.int32)
    for row, table in enumerate(tables):
        padded[row, : len(table)] = table
    decode = DecodeWork([10, 11], rng.integers(1, 200, 2), decode_lens)
    return pool, layout_step(work, decode, padded, bs)


def test_padded_unified_step_gives_the_eager_logits(tiny_decoder):
    from harness.gpu.attention import TritonAttention
    from harness.gpu.model import Decoder

    backend = TritonAttention()
    decoder = Decoder(tiny_decoder.config, tiny_decoder.weights, backend)
    pool, host = _mixed_step(torch.float32, backend, tiny_decoder.config)
    # Earlier context of the later chunk and of the decode rows: any KV, written once.
    eager = decoder.forward(to_device(host, pool, torch.device("cpu"), by_segment=False), pool)

    unified = UnifiedRows.of(host)
    assert unified.query_starts.tolist() == [0, 9, 16, 20, 21, 22]
    assert unified.contexts.tolist() == [9, 13, 14, 11, 3]
    assert host.logit_rows.tolist() == [8, 16, 17, 18, 19, 20, 21]
    one_per_seq = MixedBuffers(max_tokens=32, max_seqs=5, width=16, device=torch.device("cpu"))
    assert not one_per_seq.fits(host, unified.num_seqs)  # 7 sampled rows
    buffers = MixedBuffers(max_tokens=32, max_seqs=5, width=16, device=torch.device("cpu"),
                           max_sampled=10)
    assert buffers.fits(host, unified.num_seqs)
    buffers.load(host, unified, 32)
    padded = decoder.forward(buffers.inputs(32), pool)[: len(host.logit_rows)]
    torch.testing.assert_close(padded, eager, rtol=1e-4, atol=1e-4)
    assert padded.argmax(-1).tolist() == eager.argmax(-1).tolist()


def test_cleared_buffers_are_valid_inputs_for_a_smaller_bucket():
    """A capture of a small bucket after a larger step was loaded must not see that step's
    sampled rows (they index rows the small bucket does not have)."""
    buffers = MixedBuffers(max_tokens=64, max_seqs=8, width=16, device=torch.device("cpu"))
    buffers.logit_rows.fill_(40)
    buffers.rows.fill_(7)
    buffers.clear()
    step = buffers.inputs(8)
    assert step.logit_rows.tolist() == [0] * 8
    assert step.slot_mapping.slots.tolist() == [-1] * 8
    assert step.prefill_batch.query_starts.tolist() == [0] * 9
