"""The Triton paged decode kernel against the float64 gather-then-attend reference."""
import pytest
import torch

import kernels.paged_decode as decode_module
from kernels import split_kv
from kernels.decode_launch import TILE_TOKENS, DecodeConfig
from kernels.fp8 import FP8_DTYPE
from kernels.paged_decode import DecodeShape, paged_decode, plan_for_shape, plan_launch
from kernels.reference import reference_decode
from kernels.segments import KVLayoutError, segment_table
from kernels.split_kv import split_counters

HEAD_DIM = 32
TILE_16 = DecodeConfig(block_n=16, num_warps=4, num_stages=2)


def _query(batch, num_heads, dtype, device, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, num_heads, HEAD_DIM, generator=gen).to(device=device, dtype=dtype)


def _run_both(cache, q, **kwargs):
    out = paged_decode(q, cache.k_segments, cache.v_segments, cache.block_tables,
                       cache.context_lens, cache.blocks_per_segment, **kwargs)
    k64, v64 = cache.widened()
    ref = reference_decode(q.double(), k64, v64, cache.block_tables, cache.context_lens,
                           cache.blocks_per_segment, scale=kwargs.get("scale"),
                           compute_dtype=torch.float64)
    return out, ref


@pytest.mark.parametrize("num_splits", [1, 3])
@pytest.mark.parametrize("group", [1, 4, 8])
@pytest.mark.parametrize("block_size", [1, 16, 5])
def test_float32_matches_reference(make_cache, rel_err, device, block_size, group, num_splits):
    # Contexts of 1 token, of one block + 1, and one that no block size here divides.
    num_kv_heads = 2 if group < 8 else 1
    cache = make_cache(context_lens=[1, block_size + 1, 37], num_kv_heads=num_kv_heads,
                       head_dim=HEAD_DIM, block_size=block_size,
                       blocks_per_segment=max(4, 48 // block_size), num_segments=4,
                       dtype=torch.float32, seed=block_size * 10 + group)
    q = _query(3, num_kv_heads * group, torch.float32, device, seed=group)
    out, ref = _run_both(cache, q, num_splits=num_splits, config=TILE_16)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert rel_err(out, ref) < 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block_size", [1, 16])
def test_half_precision_matches_reference(make_cache, rel_err, device, dtype, block_size):
    cache = make_cache(context_lens=[17, 1, 70, 33], num_kv_heads=2, head_dim=HEAD_DIM,
                       block_size=block_size, blocks_per_segment=96 // block_size,
                       num_segments=3, dtype=dtype, seed=7)
    q = _query(4, 8, dtype, device, seed=8)
    out, ref = _run_both(cache, q, num_splits=2)
    assert out.dtype == dtype
    assert rel_err(out, ref) < 1e-2


@pytest.mark.parametrize("block_size, block_n", [(16, 16), (32, 16), (64, 64)])
def test_tile_inside_one_block(make_cache, rel_err, device, block_size, block_n):
    """block_size a multiple of the tile: the kernel looks up one block per tile."""
    cache = make_cache(context_lens=[block_size + 1, 2 * block_size + 3], num_kv_heads=1,
                       head_dim=HEAD_DIM, block_size=block_size, blocks_per_segment=2,
                       num_segments=4, dtype=torch.float32, seed=block_size)
    q = _query(2, 4, torch.float32, device, seed=1)
    out, ref = _run_both(cache, q, num_splits=2, config=DecodeConfig(block_n, 4, 2))
    assert rel_err(out, ref) < 1e-4


def test_unbacked_segments_and_padding_are_never_read(make_cache, rel_err, device):
    cache = make_cache(context_lens=[9, 23], num_kv_heads=2, head_dim=HEAD_DIM, block_size=4,
                       blocks_per_segment=4, num_segments=5, unbacked=(0, 3),
                       dtype=torch.float32, seed=3)
    q = _query(2, 4, torch.float32, device, seed=3)
    out, ref = _run_both(cache, q, num_splits=1)
    assert rel_err(out, ref) < 1e-4


def test_more_splits_than_tiles_and_custom_scale(make_cache, rel_err, device):
    cache = make_cache(context_lens=[2, 20], num_kv_heads=2, head_dim=HEAD_DIM, block_size=3,
                       blocks_per_segment=8, num_segments=2, dtype=torch.float32, seed=4)
    q = _query(2, 4, torch.float32, device, seed=4)
    out, ref = _run_both(cache, q, num_splits=7, scale=0.3, config=TILE_16)
    assert rel_err(out, ref) < 1e-4


def test_more_splits_than_max_splits_combine_in_the_kernel(make_cache, rel_err, device):
    """An explicit split count past MAX_SPLITS (64): the last split to finish combines all 67
    (16-token tiles: 67 tiles for 67 splits)."""
    cache = make_cache(context_lens=[1070], num_kv_heads=1, head_dim=HEAD_DIM, block_size=16,
                       blocks_per_segment=80, num_segments=1, dtype=torch.float32, seed=5)
    q = _query(1, 2, torch.float32, device, seed=5)
    out, ref = _run_both(cache, q, num_splits=67, config=TILE_16)
    assert rel_err(out, ref) < 1e-4


def test_contiguous_block_table_and_default_splits(make_cache, rel_err, device):
    cache = make_cache(context_lens=[40, 12, 64], num_kv_heads=2, head_dim=HEAD_DIM,
                       block_size=16, blocks_per_segment=4, num_segments=3, shuffle=False,
                       dtype=torch.float32, seed=5)
    q = _query(3, 8, torch.float32, device, seed=5)
    out, ref = _run_both(cache, q)
    assert rel_err(out, ref) < 1e-4


def test_zero_context_gives_zeros_and_keyless_splits_weigh_nothing(make_cache, device):
    """Rows 0 and 3 have no keys; with 4 splits of 16-token tiles row 1's keys all fall in its
    first split and row 2's in its first three, so the splits that combine see no key."""
    cache = make_cache(context_lens=[0, 5, 40, 0], num_kv_heads=2, head_dim=HEAD_DIM,
                       block_size=4, blocks_per_segment=16, num_segments=1, dtype=torch.float32,
                       seed=6)
    q = _query(4, 4, torch.float32, device, seed=6)
    for num_splits in (1, 2, 4):
        out, ref = _run_both(cache, q, num_splits=num_splits, config=TILE_16)
        for row in (0, 3):
            assert torch.equal(out[row], torch.zeros_like(out[row]))
        assert torch.allclose(out[1:3].double(), ref[1:3], rtol=1e-4, atol=1e-5)


def test_split_calls_reset_their_counters_and_repeat_exactly(make_cache, device, monkeypatch):
    """The last split of each row and KV head sets its counter back to zero, so the next call
    counts from zero again and combines the same partials in the same order: the same bits."""
    monkeypatch.setattr(decode_module, "_LAUNCHES", {})
    monkeypatch.setattr(split_kv, "_COUNTERS", {})
    cache = make_cache(context_lens=[33, 0, 70], num_kv_heads=2, head_dim=HEAD_DIM,
                       block_size=16, blocks_per_segment=8, num_segments=2,
                       dtype=torch.bfloat16, seed=11)
    q = _query(3, 8, torch.bfloat16, device, seed=11)
    runs = []
    for num_splits in (5, 5, 3):
        runs.append(paged_decode(q, cache.k_segments, cache.v_segments, cache.block_tables,
                                 cache.context_lens, cache.blocks_per_segment,
                                 num_splits=num_splits, config=TILE_16))
        counters = split_counters(q.device, 3 * 2)
        assert not counters.any()
    assert torch.equal(runs[0], runs[1])
    assert torch.allclose(runs[0].float(), runs[2].float(), rtol=1e-2, atol=1e-2)


def test_split_calls_of_other_shapes_between_leave_a_call_exact(make_cache, device,
                                                                monkeypatch):
    """Split launches of every shape write their partials to one shared buffer
    (split_kv.decode_partials): calls one after another, of another shape and another split
    count in between, leave each call's result as it is alone."""
    monkeypatch.setattr(decode_module, "_LAUNCHES", {})
    monkeypatch.setattr(split_kv, "_DECODE_PARTIALS", {})
    small = make_cache(context_lens=[33, 70], num_kv_heads=2, head_dim=HEAD_DIM, block_size=16,
                       blocks_per_segment=8, num_segments=2, dtype=torch.float32, seed=3)
    large = make_cache(context_lens=[50, 9, 64, 20], num_kv_heads=2, head_dim=HEAD_DIM,
                       block_size=16, blocks_per_segment=8, num_segments=2,
                       dtype=torch.float32, seed=4)
    q_small = _query(2, 8, torch.float32, device, seed=3)
    q_large = _query(4, 8, torch.float32, device, seed=4)

    def call(cache, q, num_splits):
        return paged_decode(q, cache.k_segments, cache.v_segments, cache.block_tables,
                            cache.context_lens, cache.blocks_per_segment,
                            num_splits=num_splits, config=TILE_16)

    first = call(small, q_small, 3)
    other = call(large, q_large, 4)
    assert torch.equal(call(small, q_small, 3), first)
    assert torch.equal(call(large, q_large, 4), other)
    assert len(split_kv._DECODE_PARTIALS[q_small.device]) == 2


def test_out_writes_into_a_row_slice(make_cache, rel_err, device):
    """out= fills a slice of a larger output (the decode rows of a mixed step), nothing else."""
    cache = make_cache(context_lens=[9, 30], num_kv_heads=2, head_dim=HEAD_DIM, block_size=4,
                       blocks_per_segment=8, num_segments=2, dtype=torch.float32, seed=9)
    q = _query(2, 8, torch.float32, device, seed=9)
    full = torch.full((5, 8, HEAD_DIM), 7.0, device=device)
    for num_splits in (1, 2):
        out, ref = _run_both(cache, q, num_splits=num_splits, config=TILE_16, out=full[3:])
        assert out.data_ptr() == full[3:].data_ptr()
        assert rel_err(full[3:], ref) < 1e-4
        assert torch.equal(full[:3], torch.full_like(full[:3], 7.0))
    with pytest.raises(KVLayoutError, match="out must be"):
        paged_decode(q, cache.k_segments, cache.v_segments, cache.block_tables,
                     cache.context_lens, cache.blocks_per_segment, out=full[:3])


def test_rejects_mismatched_inputs(make_cache, device):
    cache = make_cache(context_lens=[5], num_kv_heads=2, head_dim=HEAD_DIM, block_size=4,
                       blocks_per_segment=4, num_segments=1, dtype=torch.float32, seed=0)
    args = (cache.k_segments, cache.v_segments, cache.block_tables, cache.context_lens, 4)
    with pytest.raises(KVLayoutError, match="multiple"):
        paged_decode(_query(1, 3, torch.float32, device, 0), *args)
    with pytest.raises(KVLayoutError, match="blocks_per_segment"):
        paged_decode(_query(1, 4, torch.float32, device, 0), *args[:4], 8)
    with pytest.raises(KVLayoutError, match="int32"):
        paged_decode(_query(1, 4, torch.float32, device, 0), *args[:2],
                     cache.block_tables.long(), *args[3:])


def test_segment_table_checks_segments(device):
    seg = torch.zeros(2, 4, 1, 16, device=device)
    with pytest.raises(KVLayoutError, match="shape"):
        segment_table([seg, torch.zeros(3, 4, 1, 16, device=device)], [seg, seg])
    with pytest.raises(KVLayoutError, match="aligned"):
        flat = torch.zeros(2 * 4 * 16 + 1, device=device)
        segment_table([seg, flat[1:].view(2, 4, 1, 16)], [seg, seg])
    table = segment_table([None, seg], [None, seg.clone()])
    assert table.k_offsets.tolist()[1] == 0 and table.blocks_per_segment == 2
    # A float8 cache holds V transposed in runs: V in K's shape is refused.
    k8 = torch.zeros(2, 4, 1, 16, device=device).to(FP8_DTYPE)
    with pytest.raises(KVLayoutError, match=r"V of shape \(2, 1, 1, 16, 4\)"):
        segment_table([k8], [k8.clone()])
    assert segment_table([k8], [k8.view(2, 1, 1, 16, 4).clone()]).block_size == 4


def test_plan_launch_defaults(make_cache, device):
    cache = make_cache(context_lens=[40, 12], num_kv_heads=2, head_dim=HEAD_DIM, block_size=16,
                       blocks_per_segment=4, num_segments=3, dtype=torch.float32, seed=9)
    table = segment_table(cache.k_segments, cache.v_segments)
    q = _query(2, 8, torch.float32, device, seed=9)
    plan = plan_launch(q, table, cache.block_tables)
    assert plan.num_splits >= 1 and plan.constexprs["SPLIT"] == (plan.num_splits > 1)
    fixed = plan_launch(q, table, cache.block_tables, num_splits=3, config=TILE_16)
    assert fixed.num_splits == 3 and fixed.config == TILE_16 and fixed.constexprs["BLOCK_N"] == 16


def test_plan_is_cached_and_equals_the_uncached_plan(make_cache, device):
    cache = make_cache(context_lens=[40, 12, 3], num_kv_heads=2, head_dim=HEAD_DIM,
                       block_size=16, blocks_per_segment=4, num_segments=3, dtype=torch.float32,
                       seed=10)
    table = segment_table(cache.k_segments, cache.v_segments)
    q = _query(3, 8, torch.float32, device, seed=10)
    shape = DecodeShape.of(q, table, cache.block_tables)
    for num_splits, config in ((None, None), (2, None), (None, TILE_16)):
        first = plan_launch(q, table, cache.block_tables, num_splits, config)
        assert plan_launch(q, table, cache.block_tables, num_splits, config) is first
        assert plan_for_shape.__wrapped__(shape, num_splits, config) == first
    wider = cache.block_tables.new_zeros(3, cache.block_tables.shape[1] + 16)
    assert DecodeShape.of(q, table, wider) != shape


def _run_fp8(cache, q, per_head, **kwargs):
    """paged_decode over the fp8 copy of cache, and the float64 reference over the same fp8
    values dequantized."""
    k8, v8, k_scale, v_scale = cache.quantized(per_head)
    out = paged_decode(q, k8, v8, cache.block_tables, cache.context_lens,
                       cache.blocks_per_segment, k_scale=k_scale, v_scale=v_scale, **kwargs)
    ref = reference_decode(q.double(), k8, v8, cache.block_tables, cache.context_lens,
                           cache.blocks_per_segment, scale=kwargs.get("scale"),
                           compute_dtype=torch.float64, k_scale=k_scale, v_scale=v_scale)
    return out, ref


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2),
                                              (torch.float16, 1e-2)])
@pytest.mark.parametrize("block_size, num_splits, per_head", [(1, 1, True), (16, 3, False),
                                                              (5, 2, True), (64, 2, False)])
def test_fp8_matches_dequantized_reference(make_cache, rel_err, device, dtype, tolerance,
                                           block_size, num_splits, per_head):
    """Over an fp8 cache the kernel computes attention over exactly the dequantized values."""
    cache = make_cache(context_lens=[1, block_size + 1, 37], num_kv_heads=2, head_dim=HEAD_DIM,
                       block_size=block_size, blocks_per_segment=max(4, 48 // block_size),
                       num_segments=4, unbacked=(2,), dtype=torch.bfloat16, seed=block_size)
    cache.scale_heads([1.0, 4.0], [1.0, 30.0])
    q = _query(3, 8, dtype, device, seed=block_size)
    out, ref = _run_fp8(cache, q, per_head, num_splits=num_splits, config=TILE_16)
    assert out.dtype == dtype
    assert rel_err(out, ref) < tolerance


@pytest.mark.parametrize("v_factors", [[1.0, 30.0], [1e-3, 10.0]])
@pytest.mark.parametrize("per_head", [False, True])
def test_fp8_accuracy_against_unquantized_cache(make_cache, fp8_bound, device, v_factors,
                                                per_head):
    """The price of fp8 KV: bfloat16 decode over the quantized cache against the float64
    reference over the bfloat16 cache it came from, for KV heads of ranges 30x and 10,000x
    apart (e4m3 is floating point: one per-tensor scale serves both until the narrow head
    sinks into the subnormals, about 2 ** 15 below the top)."""
    cache = make_cache(context_lens=[200, 64, 513], num_kv_heads=2, head_dim=HEAD_DIM,
                       block_size=16, blocks_per_segment=16, num_segments=4,
                       dtype=torch.bfloat16, seed=21)
    cache.scale_heads([0.5, 2.0], v_factors)
    q = _query(3, 8, torch.bfloat16, device, seed=21)
    k64, v64 = cache.widened()
    exact = reference_decode(q.double(), k64, v64, cache.block_tables, cache.context_lens,
                             cache.blocks_per_segment, compute_dtype=torch.float64)
    out, _ = _run_fp8(cache, q, per_head)
    for head in range(2):  # query heads 4 * head .. 4 * head + 3 read KV head `head`
        rows = slice(4 * head, 4 * head + 4)
        v_amax = max(t[:, :, head].abs().max().item() for t in v64 if t is not None)
        error = (out[:, rows].double() - exact[:, rows]).abs().max().item()
        print(f"fp8 V heads x{v_factors}, per_head={per_head}, KV head {head}: max abs err "
              f"{error:.3g}, {error / v_amax:.2%} of V's range")
        assert error < fp8_bound(v_amax)


WINDOW_CONTEXTS = [1, 17, 37, 70]


@pytest.mark.parametrize("poison", [True, False])
@pytest.mark.parametrize("num_splits, config", [(1, TILE_16), (3, TILE_16), (None, None)])
@pytest.mark.parametrize("block_size", [1, 5, 16])
@pytest.mark.parametrize("window", [1, 6, 16, 40])
def test_sliding_window_matches_reference(make_cache, rel_err, device, window, block_size,
                                          num_splits, config, poison):
    """The query reads its last `window` keys; blocks wholly before them are never read
    (their entries point at NaN, or at -1 as a released block's do)."""
    cache = make_cache(context_lens=WINDOW_CONTEXTS, num_kv_heads=2, head_dim=HEAD_DIM,
                       block_size=block_size, blocks_per_segment=max(4, 64 // block_size),
                       num_segments=4, dtype=torch.float32, seed=window + block_size)
    first = [max(0, n - window) for n in WINDOW_CONTEXTS]
    cache.release_before(first, poison=poison)
    q = _query(4, 8, torch.float32, device, seed=window)
    out = paged_decode(q, cache.k_segments, cache.v_segments, cache.block_tables,
                       cache.context_lens, cache.blocks_per_segment, num_splits=num_splits,
                       config=config, window=window)
    k64, v64 = cache.widened()
    ref = reference_decode(q.double(), k64, v64, cache.block_tables, cache.context_lens,
                           cache.blocks_per_segment, compute_dtype=torch.float64, window=window)
    assert rel_err(out, ref) < 1e-4


def test_a_window_past_the_context_is_full_attention(make_cache, device):
    cache = make_cache(context_lens=WINDOW_CONTEXTS, num_kv_heads=2, head_dim=HEAD_DIM,
                       block_size=16, blocks_per_segment=8, num_segments=2,
                       dtype=torch.float32, seed=1)
    q = _query(4, 8, torch.float32, device, seed=1)
    runs = [paged_decode(q, cache.k_segments, cache.v_segments, cache.block_tables,
                         cache.context_lens, cache.blocks_per_segment, num_splits=2,
                         config=TILE_16, window=window) for window in (None, 70, 1000)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])


def test_window_bounds_the_split_count(make_cache, device):
    """Splits share out the window's keys, not the table's span."""
    cache = make_cache(context_lens=[4000], num_kv_heads=1, head_dim=HEAD_DIM, block_size=16,
                       blocks_per_segment=256, num_segments=1, dtype=torch.float32, seed=2)
    q = _query(1, 4, torch.float32, device, seed=2)
    table = segment_table(cache.k_segments, cache.v_segments)
    shape = DecodeShape.of(q, table, cache.block_tables)
    windowed = DecodeShape.of(q, table, cache.block_tables, window=256)
    assert windowed.max_keys == 256 + TILE_TOKENS < shape.max_keys
    assert plan_for_shape.__wrapped__(windowed).constexprs["HAS_WINDOW"]
    assert not plan_for_shape.__wrapped__(shape).constexprs["HAS_WINDOW"]


@pytest.mark.parametrize("window", [0, -3, 2.5, True])
def test_rejects_a_bad_window(make_cache, device, window):
    cache = make_cache(context_lens=[5], num_kv_heads=1, head_dim=HEAD_DIM, block_size=4,
                       blocks_per_segment=4, num_segments=1, dtype=torch.float32, seed=3)
    q = _query(1, 2, torch.float32, device, seed=3)
    with pytest.raises(KVLayoutError, match="window"):
        paged_decode(q, cache.k_segments, cache.v_segments, cache.block_tables,
                     cache.context_lens, cache.blocks_per_segment, window=window)
