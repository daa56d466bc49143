"""The padded inputs of a mixed-step graph give the eager step's logits (no capture: on a CPU the
Triton interpreter runs the forward the graph would hold: decode rows through paged_decode,
prefill chunks through paged_prefill), a verification's every row sampled."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from allocators import make_allocator  # noqa: E402
from harness.engine.executor import KVGeometry  # noqa: E402
from harness.gpu.batching import DecodeWork, PrefillWork, layout_step, to_device  # noqa: E402
from harness.gpu.kv_pool import KVPool  # noqa: E402
from harness.gpu.mixed_graphs import (MixedBuffers, faster_than_larger,  # noqa: E402
                                      padded_sizes, seq_buckets, token_buckets)


def test_token_buckets_cover_every_size_up_to_the_cap():
    buckets = token_buckets(2048)
    assert buckets[-1] == 2048 and buckets == sorted(set(buckets))
    assert all(b % 128 == 0 for b in buckets if b >= 128)
    assert token_buckets(100)[-1] == 100
    assert token_buckets(512, 32)[4:] == list(range(128, 513, 32))


def test_a_bucket_is_kept_only_where_it_beats_every_larger_one():
    sizes = [128, 160, 192, 224, 256]
    assert faster_than_larger(sizes, [1.0, 1.2, 1.3, 1.4, 1.5]) == sizes
    # 192 is slower than 224 (a poor kernel choice): steps of 161-224 tokens pad to 224.
    assert faster_than_larger(sizes, [1.0, 1.2, 1.6, 1.4, 1.5]) == [128, 160, 224, 256]
    assert faster_than_larger(sizes, [2.0, 1.2, 1.6, 1.4, 1.0]) == [256]


def test_measured_buckets_time_every_candidate_and_end_at_the_cap(tiny_decoder, monkeypatch):
    """Every BUCKET_STEP candidate is timed once; a candidate slower than a larger one is
    dropped, and the cap is always a bucket (here, every size above 160 is slower than 2048)."""
    import weakref

    import harness.gpu.mixed_graphs as mixed

    candidates = token_buckets(2048, mixed.BUCKET_STEP)
    slow = iter([float(t) if t <= 160 else 5000.0 - t for t in candidates])
    monkeypatch.setattr(mixed, "median_s", lambda fn, device: (fn(), next(slow))[1])
    monkeypatch.setattr(mixed, "_MEASURED", weakref.WeakKeyDictionary())
    expected = [t for t in candidates if t <= 160] + [2048]
    assert mixed.measured_token_buckets(tiny_decoder, 2048) == expected
    assert next(slow, None) is None
    # Once per decoder: a second executor of it pads alike, timing nothing again.
    assert mixed.measured_token_buckets(tiny_decoder, 2048) == expected


def test_seq_buckets_are_powers_of_two_up_to_the_cap():
    assert seq_buckets(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert seq_buckets(48) == [1, 2, 4, 8, 16, 32, 48]


def _mixed_step(pool_dtype, backend, config, host_tables, device="cpu"):
    bs = 4
    alloc = make_allocator("paged", 512, block_size=bs)
    pool = KVPool(KVGeometry(bs, alloc.blocks_per_segment, 512), num_layers=config.num_layers,
                  num_kv_heads=config.num_kv_heads, head_dim=config.head_dim, dtype=pool_dtype,
                  device=device, prepare=backend.prepare)
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
        config.num_layers, 2, len(slots), config.num_kv_heads, config.head_dim,
        generator=gen).to(device=device, dtype=pool_dtype))
    if pool.scales is not None:  # fp8: scales other than 1, so that a lost one shows
        scales = torch.linspace(0.25, 0.75, config.num_layers * config.num_kv_heads,
                                device=device)
        scales = scales.reshape(config.num_layers, config.num_kv_heads)
        pool.set_scales(scales, 2 * scales)
    decode = DecodeWork([10, 11], rng.integers(1, 200, 2), decode_lens)
    ids, rows, device_tables = host_tables(tables, device)
    return pool, device_tables, layout_step(work, decode, ids, rows.array, bs)


# (padded tokens, padded decode rows, padded prefill sequences): rows 20..29 padding, decode
# rows 30 and 31, attended over 28..31; and decode padding right after the prefill rows
# (decode attention over rows 20..27, of which 20..25 padding; rows 16..19 the verification's,
# every one sampled). The 3 prefill sequences padded to 4 or 8, or not at all. An fp8 pool:
# both launches read the layer's scales in the padded step as in the eager one. Balanced: the
# padded step's decode rows run over a work list (the eager step's without).
@pytest.mark.parametrize("tokens, decode_rows, seqs, pool_dtype, balanced", [
    (32, 4, 4, torch.float32, False), (28, 8, 8, torch.float32, False),
    (32, 4, 3, torch.float32, False), (32, 4, 4, torch.float8_e4m3fn, False),
    (28, 8, 8, torch.float32, True), (32, 4, 4, torch.float8_e4m3fn, True)])
def test_padded_step_gives_the_eager_logits(tiny_decoder, host_tables, tokens, decode_rows,
                                            seqs, pool_dtype, balanced, monkeypatch):
    """On the GPU where there is one (float32 GEMMs without TF32), else in the interpreter."""
    from harness.gpu.attention import TritonAttention
    from harness.gpu.executor import build_decoder
    from harness.gpu.model import Decoder
    from harness.model.presets import model_preset

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    source = tiny_decoder
    if device.type == "cuda":
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
        source = build_decoder(model_preset("tiny"), device="cuda", dtype="float32", seed=0)
    backend = TritonAttention(decode_balance="on" if balanced else "off", decode_programs=4)
    decoder = Decoder(source.config, source.weights, backend)
    pool, device_tables, host = _mixed_step(pool_dtype, backend, source.config, host_tables,
                                            device)
    eager_step = to_device(host, pool, device_tables, device, by_segment=False)
    assert eager_step.num_decode_rows == 2 and len(eager_step.input_ids) == 22
    eager = decoder.forward(eager_step, pool)

    # 5 sequences and 7 sampled rows: a buffer of one sampled row per sequence is too small.
    assert host.logit_rows.tolist() == [8, 16, 17, 18, 19, 20, 21]
    one_per_seq = MixedBuffers(max_tokens=32, max_seqs=5, width=16, device=device)
    assert not one_per_seq.fits(host)
    buffers = MixedBuffers(max_tokens=32, max_seqs=8, width=16, device=device,
                           max_sampled=10, work_plan=decoder.work_list_plan(pool))
    assert buffers.fits(host)
    buffers.stage(host, tokens, decode_rows, balanced)
    buffers.load(device_tables, decode_rows, seqs)
    step = buffers.inputs(tokens, decode_rows, seqs, balanced)
    assert (step.decode_work is not None) == balanced
    assert step.context_lens.tolist()[-2:] == [11, 3]
    assert step.prefill_batch.context_lens.tolist() == [9, 13, 14, 0, 0, 0, 0, 0][:seqs]
    assert step.slot_mapping.slots[20 : tokens - 2].tolist() == [-1] * (tokens - 22)
    padded = decoder.forward(step, pool)[: len(host.logit_rows)]
    torch.testing.assert_close(padded, eager, rtol=1e-4, atol=1e-4)
    assert padded.argmax(-1).tolist() == eager.argmax(-1).tolist()


def test_decode_rows_among_the_prefill_rows_are_refused(tiny_decoder, host_tables):
    """Decode and prefill attention run side by side on a GPU: a layout where padded decode
    rows would overlap the prefill rows (20 of them here) is an error, not a race."""
    from harness.gpu.attention import TritonAttention

    _, _, host = _mixed_step(torch.float32, TritonAttention(decode_balance="off"),
                             tiny_decoder.config, host_tables)
    buffers = MixedBuffers(max_tokens=32, max_seqs=8, width=16, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="do not fit after 20 prefill rows"):
        buffers.stage(host, 24, 8)
    with pytest.raises(ValueError, match="hold 2 decoding sequences"):
        buffers.stage(host, 32, 1)


@pytest.mark.parametrize("prefill, decode, seqs, expected", [
    (200, 16, 1, (224, 16, 1)),  # 216 rows fit 224
    (96, 20, 1, (128, 32, 1)),  # 96 + 32 padded decode rows fit 128
    (100, 20, 1, (160, 32, 1)),  # 120 rows would fit 128, but not 100 + 32 padded
    (0, 5, 0, (8, 8, 1)),  # decode rows alone; one (empty) prefill sequence
    (2042, 5, 3, (2048, 6, 4)),  # the cap: decode rows pad only into the room left
    (2048, 0, 2, (2048, 0, 2)),
])
def test_padded_sizes_keep_decode_rows_after_the_prefill_rows(prefill, decode, seqs, expected):
    buckets = [8, 16, 32, 64, 128, 160, 192, 224, 256, 512, 2048]
    tokens, rows, padded_seqs = padded_sizes(buckets, seq_buckets(256), prefill, decode, seqs)
    assert (tokens, rows, padded_seqs) == expected
    assert prefill + rows <= tokens and rows >= decode


def test_empty_staging_gives_valid_inputs_for_a_smaller_bucket(host_tables):
    """A capture of a small bucket while a larger step is staged must not see that step's
    sampled rows (they index rows the small bucket does not have); the staged step is kept."""
    buffers = MixedBuffers(max_tokens=64, max_seqs=8, width=16, device=torch.device("cpu"))
    buffers._longs_host.fill_(40)  # what a larger step left staged
    buffers._ints_host.fill_(7)
    _, _, tables = host_tables([[3, 4]])
    with buffers.empty_staging():
        buffers.load(tables, 4, 8)
        step = buffers.inputs(8, 4, 8)
        assert step.logit_rows.tolist() == [0] * 8
        assert step.slot_mapping.slots.tolist() == [-1] * 8
        assert step.prefill_batch.query_starts.tolist() == [0] * 9
        assert step.context_lens.tolist() == [0] * 4
        assert step.block_tables.tolist() == [[3, 4] + [0] * 14] * 4  # row 0's, never read
    assert buffers._longs_host.eq(40).all() and buffers._ints_host.eq(7).all()
