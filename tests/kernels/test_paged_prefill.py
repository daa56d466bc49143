"""The Triton paged prefill kernel against the float64 gather-then-attend reference."""
import itertools

import pytest
import torch
from hypothesis import given, strategies as st

from kernels.split_kv import MAX_SPLITS
from kernels.paged_prefill import (
    PrefillShape,
    default_num_splits,
    paged_prefill,
    plan_launch,
    plan_prefill,
)
from kernels.prefill_launch import (
    GPU_CONFIG,
    MIN_SPLIT_TILES,
    SMALL_GPU_CONFIG,
    PrefillConfig,
    choose_num_splits,
    default_config,
)
from kernels.reference import reference_prefill
from kernels.segments import KVLayoutError, segment_table

HEAD_DIM = 32
SMALL = PrefillConfig(block_m=16, block_n=16, num_warps=4, num_stages=1)


def _inputs(query_lens, num_heads, dtype, device, seed, head_dim=HEAD_DIM):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(query_lens), num_heads, head_dim, generator=gen)
    starts = torch.tensor([0, *itertools.accumulate(query_lens)], dtype=torch.int32)
    return q.to(device=device, dtype=dtype), starts.to(device)


def _run_both(cache, query_lens, num_heads, dtype, device, seed=0, **kwargs):
    q, starts = _inputs(query_lens, num_heads, dtype, device, seed)
    out = paged_prefill(q, cache.k_segments, cache.v_segments, cache.block_tables, starts,
                        cache.context_lens, cache.blocks_per_segment, **kwargs)
    k64, v64 = cache.widened()
    ref = reference_prefill(q.double(), k64, v64, cache.block_tables, starts.cpu(),
                            cache.context_lens.cpu(), cache.blocks_per_segment,
                            scale=kwargs.get("scale"), compute_dtype=torch.float64)
    assert out.shape == q.shape and out.dtype == dtype
    return out, ref


# Query lengths 1 and ragged; contexts equal to them (fresh prompts) or longer (a prefix hit or
# a later chunk), one of them past a tile and a block boundary at every block size here.
QUERY_LENS = [1, 7, 20, 3]
CONTEXTS = [1, 25, 20, 40]


@pytest.mark.parametrize("group", [1, 4, 8])
@pytest.mark.parametrize("block_size", [1, 3, 16])
def test_float32_matches_reference(make_cache, rel_err, device, block_size, group):
    num_kv_heads = 2 if group < 8 else 1
    cache = make_cache(context_lens=CONTEXTS, num_kv_heads=num_kv_heads, head_dim=HEAD_DIM,
                       block_size=block_size, blocks_per_segment=max(2, 48 // block_size),
                       num_segments=3, dtype=torch.float32, seed=block_size * 10 + group)
    out, ref = _run_both(cache, QUERY_LENS, num_kv_heads * group, torch.float32, device,
                         seed=group, config=SMALL)
    assert rel_err(out, ref) < 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_matches_reference(make_cache, rel_err, device, dtype):
    cache = make_cache(context_lens=CONTEXTS, num_kv_heads=2, head_dim=HEAD_DIM, block_size=16,
                       blocks_per_segment=4, num_segments=3, dtype=dtype, seed=7)
    out, ref = _run_both(cache, QUERY_LENS, 8, dtype, device, seed=8)
    assert rel_err(out, ref) < 1e-2


def test_block_holding_whole_tiles(make_cache, rel_err, device):
    """block_size 256, a multiple of the key tile: one table lookup per tile."""
    cache = make_cache(context_lens=[300, 40], num_kv_heads=1, head_dim=HEAD_DIM, block_size=256,
                       blocks_per_segment=1, num_segments=4, dtype=torch.float32, seed=11)
    out, ref = _run_both(cache, [5, 40], 4, torch.float32, device, seed=11,
                         config=PrefillConfig(block_m=16, block_n=64, num_warps=4, num_stages=1))
    assert rel_err(out, ref) < 1e-4


def test_unbacked_segments_padding_and_custom_scale(make_cache, rel_err, device):
    cache = make_cache(context_lens=[9, 23], num_kv_heads=2, head_dim=HEAD_DIM, block_size=4,
                       blocks_per_segment=4, num_segments=5, unbacked=(0, 3),
                       dtype=torch.float32, seed=3)
    out, ref = _run_both(cache, [9, 2], 4, torch.float32, device, seed=3, scale=0.3,
                         config=SMALL)
    assert rel_err(out, ref) < 1e-4


def test_chunks_of_one_prompt_equal_the_whole_prompt(make_cache, device):
    """Prefilling a prompt in chunks (each over the KV of the ones before) gives the rows a
    single prefill gives."""
    cache = make_cache(context_lens=[29], num_kv_heads=1, head_dim=HEAD_DIM, block_size=3,
                       blocks_per_segment=8, num_segments=2, dtype=torch.float32, seed=5)
    q, starts = _inputs([29], 2, torch.float32, device, seed=5)
    args = (cache.k_segments, cache.v_segments, cache.block_tables)
    whole = paged_prefill(q, *args, starts, cache.context_lens, cache.blocks_per_segment,
                          config=SMALL)
    for lo, hi in ((0, 11), (11, 12), (12, 29)):
        part = paged_prefill(q[lo:hi], *args, starts.new_tensor([0, hi - lo]),
                             cache.context_lens.new_tensor([hi]), cache.blocks_per_segment,
                             config=SMALL)
        torch.testing.assert_close(part, whole[lo:hi], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_splits", [1, 3])
def test_out_keeps_the_rows_past_the_chunks(make_cache, rel_err, device, num_splits):
    """Rows after query_starts[P] (the decode rows of a mixed step) are no chunk's: out= keeps
    what they held, with or without splits, also past sequences with no query tokens (a
    padded CUDA-graph step's)."""
    cache = make_cache(context_lens=[5, 12, 0, 0], num_kv_heads=2, head_dim=HEAD_DIM,
                       block_size=4, blocks_per_segment=8, num_segments=2, dtype=torch.float32,
                       seed=4)
    q, starts = _inputs([3, 4, 0, 0], 8, torch.float32, device, seed=4)
    q = torch.cat([q, torch.randn(6, 8, HEAD_DIM, device=device)])
    out = torch.full_like(q, 7.0)
    paged_prefill(q, cache.k_segments, cache.v_segments, cache.block_tables, starts,
                  cache.context_lens, cache.blocks_per_segment, config=SMALL, out=out,
                  num_splits=num_splits)
    k64, v64 = cache.widened()
    ref = reference_prefill(q[:7].double(), k64, v64, cache.block_tables, starts.cpu(),
                            cache.context_lens.cpu(), cache.blocks_per_segment,
                            compute_dtype=torch.float64)
    assert rel_err(out[:7], ref) < 1e-4
    assert torch.equal(out[7:], torch.full_like(out[7:], 7.0))
    with pytest.raises(KVLayoutError, match="out must be"):
        paged_prefill(q, cache.k_segments, cache.v_segments, cache.block_tables, starts,
                      cache.context_lens, cache.blocks_per_segment, out=out[:7])


def test_plan_is_cached_per_shape(device):
    def shape():
        return PrefillShape(32, 8, 128, 16, 64, torch.bfloat16, torch.device(device),
                            torch.bfloat16)
    first = plan_prefill(shape())
    assert plan_prefill(shape()) is first
    consts = dict(first.constexprs)
    assert consts["BLOCK_Q"] * consts["BLOCK_G"] == first.config.block_m and consts["GROUP"] == 4
    assert first.num_tiles(100, 3) >= 3
    assert first.num_splits == 1 and first.reduce is None and not consts["SPLIT"]
    split = plan_prefill(shape(), None, 4)
    assert split.num_splits == 4 and dict(split.constexprs)["SPLIT"] and split.reduce is not None


def test_default_config_fits_shared_memory():
    cuda = torch.device("cuda")
    assert default_config(cuda, 128 * 2) == GPU_CONFIG  # bf16 / fp16 at head_dim 128
    assert default_config(cuda, 128 * 4) == SMALL_GPU_CONFIG  # float32 at head_dim 128
    assert default_config(torch.device("cpu"), 128 * 2).block_m == 16


def test_rejects_mismatched_inputs(make_cache, device):
    cache = make_cache(context_lens=[5], num_kv_heads=2, head_dim=HEAD_DIM, block_size=4,
                       blocks_per_segment=4, num_segments=1, dtype=torch.float32, seed=0)
    q, starts = _inputs([5], 4, torch.float32, device, 0)
    table = segment_table(cache.k_segments, cache.v_segments)
    with pytest.raises(KVLayoutError, match="multiple"):
        paged_prefill(q[:, :3], None, None, cache.block_tables, starts, cache.context_lens, 4,
                      table=table)
    with pytest.raises(KVLayoutError, match="disagree"):
        paged_prefill(q, None, None, cache.block_tables, starts[:1], cache.context_lens, 4,
                      table=table)
    with pytest.raises(KVLayoutError, match="int32"):
        paged_prefill(q, None, None, cache.block_tables, starts.long(), cache.context_lens, 4,
                      table=table)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("block_size, per_head", [(1, True), (3, False), (16, True)])
def test_fp8_matches_dequantized_reference(make_cache, rel_err, device, dtype, tolerance,
                                           block_size, per_head):
    """Over an fp8 cache the kernel computes attention over exactly the dequantized values."""
    cache = make_cache(context_lens=CONTEXTS, num_kv_heads=2, head_dim=HEAD_DIM,
                       block_size=block_size, blocks_per_segment=max(2, 48 // block_size),
                       num_segments=3, dtype=torch.bfloat16, seed=block_size)
    cache.scale_heads([1.0, 4.0], [1.0, 30.0])
    k8, v8, k_scale, v_scale = cache.quantized(per_head)
    q, starts = _inputs(QUERY_LENS, 8, dtype, device, seed=block_size)
    out = paged_prefill(q, k8, v8, cache.block_tables, starts, cache.context_lens,
                        cache.blocks_per_segment, config=SMALL, k_scale=k_scale,
                        v_scale=v_scale)
    ref = reference_prefill(q.double(), k8, v8, cache.block_tables, starts.cpu(),
                            cache.context_lens.cpu(), cache.blocks_per_segment,
                            compute_dtype=torch.float64, k_scale=k_scale, v_scale=v_scale)
    assert out.dtype == dtype
    assert rel_err(out, ref) < tolerance


def test_fp8_accuracy_against_unquantized_cache(make_cache, fp8_bound, device):
    """bfloat16 prefill over the quantized cache against the float64 reference over the
    bfloat16 cache."""
    cache = make_cache(context_lens=[300, 40], num_kv_heads=2, head_dim=HEAD_DIM,
                       block_size=16, blocks_per_segment=8, num_segments=4,
                       dtype=torch.bfloat16, seed=12)
    cache.scale_heads([0.5, 2.0], [1.0, 30.0])
    k8, v8, k_scale, v_scale = cache.quantized(per_head=True)
    q, starts = _inputs([37, 40], 8, torch.bfloat16, device, seed=12)
    out = paged_prefill(q, k8, v8, cache.block_tables, starts, cache.context_lens,
                        cache.blocks_per_segment, k_scale=k_scale, v_scale=v_scale)
    k64, v64 = cache.widened()
    exact = reference_prefill(q.double(), k64, v64, cache.block_tables, starts.cpu(),
                              cache.context_lens.cpu(), cache.blocks_per_segment,
                              compute_dtype=torch.float64)
    for head in range(2):
        rows = slice(4 * head, 4 * head + 4)
        v_amax = max(t[:, :, head].abs().max().item() for t in v64 if t is not None)
        error = (out[:, rows].double() - exact[:, rows]).abs().max().item()
        print(f"fp8 prefill KV head {head}: max abs err {error:.3g}, "
              f"{error / v_amax:.2%} of V's range")
        assert error < fp8_bound(v_amax)


def test_fp8_scales_are_checked(make_cache, device):
    cache = make_cache(context_lens=[5], num_kv_heads=2, head_dim=HEAD_DIM, block_size=4,
                       blocks_per_segment=4, num_segments=1, dtype=torch.bfloat16, seed=0)
    k8, v8, k_scale, v_scale = cache.quantized(per_head=True)
    q, starts = _inputs([5], 4, torch.bfloat16, device, 0)
    args = (cache.block_tables, starts, cache.context_lens, 4)
    with pytest.raises(KVLayoutError, match="k_scale"):
        paged_prefill(q, k8, v8, *args, v_scale=v_scale)
    with pytest.raises(KVLayoutError, match="one per KV head"):
        paged_prefill(q, k8, v8, *args, k_scale=k_scale.repeat(2), v_scale=v_scale)
    with pytest.raises(KVLayoutError, match="float32"):
        paged_prefill(q, k8, v8, *args, k_scale=k_scale.double(), v_scale=v_scale)
    with pytest.raises(KVLayoutError, match="must be one of"):
        paged_prefill(q.to(torch.float8_e4m3fn), k8, v8, *args, k_scale=k_scale,
                      v_scale=v_scale)
    with pytest.raises(KVLayoutError, match="scales apply"):
        paged_prefill(q, cache.k_segments, cache.v_segments, *args, k_scale=k_scale,
                      v_scale=v_scale)


# Chunks after a prefix (a window start inside the prefix, inside the chunk, or at 0), one of
# them longer than every window here, so tiles hold rows with different window starts.
WINDOW_QUERY_LENS = [1, 7, 37, 3]
WINDOW_CONTEXTS = [1, 25, 50, 40]


def _windowed_error(make_cache, rel_err, device, window, block_size, *, poison, heads,
                    **launch):
    """paged_prefill over WINDOW_CONTEXTS with the blocks before each first query's window let
    go (poisoned, or -1 as a released block's entry), against the reference: relative error."""
    cache = make_cache(context_lens=WINDOW_CONTEXTS, num_kv_heads=2, head_dim=HEAD_DIM,
                       block_size=block_size, blocks_per_segment=max(2, 64 // block_size),
                       num_segments=4, dtype=torch.float32, seed=window + block_size)
    first = [max(0, n - q + 1 - window) for n, q in zip(WINDOW_CONTEXTS, WINDOW_QUERY_LENS)]
    cache.release_before(first, poison=poison)
    q, starts = _inputs(WINDOW_QUERY_LENS, heads, torch.float32, device, seed=window)
    out = paged_prefill(q, cache.k_segments, cache.v_segments, cache.block_tables, starts,
                        cache.context_lens, cache.blocks_per_segment, window=window, **launch)
    k64, v64 = cache.widened()
    ref = reference_prefill(q.double(), k64, v64, cache.block_tables, starts.cpu(),
                            cache.context_lens.cpu(), cache.blocks_per_segment,
                            compute_dtype=torch.float64, window=window)
    return rel_err(out, ref)


@pytest.mark.parametrize("poison", [True, False])
@pytest.mark.parametrize("block_size, config", [
    (1, SMALL), (3, SMALL), (16, SMALL),
    (64, PrefillConfig(block_m=16, block_n=64, num_warps=4, num_stages=1))])
@pytest.mark.parametrize("window", [1, 4, 17, 45])
def test_sliding_window_matches_reference(make_cache, rel_err, device, window, block_size,
                                          config, poison):
    """Each query reads its last `window` keys; blocks wholly before the first query's window
    are never read (their entries point at NaN, or at -1 as a released block's do)."""
    assert _windowed_error(make_cache, rel_err, device, window, block_size, poison=poison,
                           heads=8, config=config) < 1e-4


def test_windowed_chunks_equal_the_whole_windowed_prompt(make_cache, device):
    """Chunks over the KV before them give the rows of one prefill, under a window too."""
    cache = make_cache(context_lens=[41], num_kv_heads=1, head_dim=HEAD_DIM, block_size=4,
                       blocks_per_segment=8, num_segments=2, dtype=torch.float32, seed=6)
    q, starts = _inputs([41], 2, torch.float32, device, seed=6)
    args = (cache.k_segments, cache.v_segments, cache.block_tables)
    whole = paged_prefill(q, *args, starts, cache.context_lens, cache.blocks_per_segment,
                          config=SMALL, window=9)
    for lo, hi in ((0, 13), (13, 14), (14, 41)):
        part = paged_prefill(q[lo:hi], *args, starts.new_tensor([0, hi - lo]),
                             cache.context_lens.new_tensor([hi]), cache.blocks_per_segment,
                             config=SMALL, window=9)
        torch.testing.assert_close(part, whole[lo:hi], rtol=1e-5, atol=1e-5)


def test_a_window_past_the_context_is_causal_attention(make_cache, device):
    cache = make_cache(context_lens=CONTEXTS, num_kv_heads=2, head_dim=HEAD_DIM, block_size=3,
                       blocks_per_segment=16, num_segments=2, dtype=torch.float32, seed=7)
    q, starts = _inputs(QUERY_LENS, 4, torch.float32, device, seed=7)
    outs = [paged_prefill(q, cache.k_segments, cache.v_segments, cache.block_tables, starts,
                          cache.context_lens, cache.blocks_per_segment, config=SMALL,
                          window=window) for window in (None, 1000)]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-6, atol=1e-6)


# Chunks of 1, 2, 17 and 100 tokens after 0, 5 and 200 tokens of context, packed: single rows,
# ragged tiles, a chunk of many query tiles; splits of a few key tiles, of none (a fresh
# one-token prompt reads one key tile: 5 splits leave four empty), and of many.
SPLIT_QUERY_LENS = [1, 2, 17, 100, 2, 1]
SPLIT_PREFIXES = [0, 5, 5, 200, 200, 200]
SPLIT_TILES = PrefillConfig(block_m=32, block_n=16, num_warps=4, num_stages=1)


@pytest.mark.parametrize("num_splits, block_size, dtype, tolerance", [
    (1, 16, torch.float32, 1e-4), (2, 16, torch.float32, 1e-4), (3, 16, torch.float32, 1e-4),
    (5, 16, torch.float32, 1e-4), (3, 1, torch.float32, 1e-4), (2, 64, torch.float32, 1e-4),
    (5, 64, torch.float32, 1e-4), (5, 1, torch.bfloat16, 1e-2)])
def test_splits_match_reference(make_cache, rel_err, device, num_splits, block_size, dtype,
                                tolerance):
    """Each query tile's keys shared out among num_splits programs, whose partial outputs the
    reduce combines, over several segments (GQA, 2 KV heads of 2 query heads each); the rows
    past the chunks keep what they held."""
    contexts = [p + n for p, n in zip(SPLIT_PREFIXES, SPLIT_QUERY_LENS)]
    cache = make_cache(context_lens=contexts, num_kv_heads=2, head_dim=16,
                       block_size=block_size, blocks_per_segment=max(2, 128 // block_size),
                       num_segments=8, dtype=dtype, seed=block_size + num_splits)
    q, starts = _inputs(SPLIT_QUERY_LENS, 4, dtype, device, seed=num_splits, head_dim=16)
    rows = q.shape[0]
    q = torch.cat([q, torch.randn(3, 4, 16, device=device).to(dtype)])
    out = torch.full_like(q, 7.0)
    paged_prefill(q, cache.k_segments, cache.v_segments, cache.block_tables, starts,
                  cache.context_lens, cache.blocks_per_segment, config=SPLIT_TILES, out=out,
                  num_splits=num_splits)
    k64, v64 = cache.widened()
    ref = reference_prefill(q[:rows].double(), k64, v64, cache.block_tables, starts.cpu(),
                            cache.context_lens.cpu(), cache.blocks_per_segment,
                            compute_dtype=torch.float64)
    assert rel_err(out[:rows], ref) < tolerance
    assert torch.equal(out[rows:], torch.full_like(out[rows:], 7.0))


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("num_splits", [2, 5])
def test_fp8_splits_match_dequantized_reference(make_cache, rel_err, device, dtype, tolerance,
                                                num_splits):
    cache = make_cache(context_lens=[201, 22, 100], num_kv_heads=2, head_dim=16, block_size=16,
                       blocks_per_segment=8, num_segments=4, dtype=torch.bfloat16, seed=9)
    cache.scale_heads([1.0, 4.0], [1.0, 30.0])
    k8, v8, k_scale, v_scale = cache.quantized(per_head=True)
    q, starts = _inputs([1, 17, 2], 8, dtype, device, seed=9, head_dim=16)
    out = paged_prefill(q, k8, v8, cache.block_tables, starts, cache.context_lens,
                        cache.blocks_per_segment, config=SMALL, k_scale=k_scale,
                        v_scale=v_scale, num_splits=num_splits)
    ref = reference_prefill(q.double(), k8, v8, cache.block_tables, starts.cpu(),
                            cache.context_lens.cpu(), cache.blocks_per_segment,
                            compute_dtype=torch.float64, k_scale=k_scale, v_scale=v_scale)
    assert rel_err(out, ref) < tolerance


@pytest.mark.parametrize("window, block_size, num_splits", [(4, 1, 5), (4, 16, 2), (45, 1, 2),
                                                             (45, 16, 5)])
def test_sliding_window_splits_match_reference(make_cache, rel_err, device, window, block_size,
                                               num_splits):
    """Splits share out the keys from the tile the first query's window starts in: its masked
    tiles, the unmasked ones and the diagonal; blocks before it are never read."""
    assert _windowed_error(make_cache, rel_err, device, window, block_size, poison=True,
                           heads=4, config=SMALL, num_splits=num_splits) < 1e-4


def test_default_is_one_split_off_the_gpu(make_cache):
    """The interpreter runs one program at a time: there is no GPU to fill, so one split
    unless the caller asks for more (a GPU's choice is test_split_choice's)."""
    plan = plan_prefill(PrefillShape(8, 2, 16, 16, 8, torch.float32, torch.device("cpu"),
                                     torch.float32))
    assert default_num_splits(plan, 3, 1, 4096, None) == 1
    cache = make_cache(context_lens=[5], num_kv_heads=2, head_dim=16, block_size=4,
                       blocks_per_segment=4, num_segments=1, dtype=torch.float32, seed=0)
    q, starts = _inputs([5], 4, torch.float32, "cpu", 0, head_dim=16)
    table = segment_table(cache.k_segments, cache.v_segments)
    assert plan_launch(q, table, cache.block_tables).num_splits == 1
    assert plan_launch(q, table, cache.block_tables, num_splits=4).reduce is not None
    with pytest.raises(KVLayoutError, match="num_splits"):
        paged_prefill(q, cache.k_segments, cache.v_segments, cache.block_tables, starts,
                      cache.context_lens, 4, num_splits=0)


@pytest.mark.parametrize("programs, max_keys, per_sm, expected", [
    (8, 1024, (1, 1), 8),        # a 2-token chunk over 1,000 keys: splits of 2 key tiles
    (16, 8192, (1, 1), 8),       # the most that fit in one wave (132 // 16), a power of two
    (16, 8192, (1, 2), 16),      # twice as many when split programs fit two to an SM
    (8, 256, (1, 1), 2),         # no split shorter than MIN_SPLIT_TILES key tiles
    (1, 1 << 20, (1, 1), 64),    # at most MAX_SPLITS
    (80, 1024, (1, 1), 1),       # a second split would not fit in the wave
    (132, 8192, (1, 1), 1),      # a full wave is not split
    (2048, 8192, (1, 1), 1),
    (8, 64, (1, 1), 1),          # one key tile
])
def test_split_choice(programs, max_keys, per_sm, expected):
    """The GPU's choice on H200 shapes (132 SMs, 64-key tiles), per_sm the programs an SM holds
    unsplit and split."""
    assert choose_num_splits(programs, max_keys, 132, block_n=64,
                             programs_per_sm=per_sm) == expected


@given(programs=st.integers(1, 4096), max_keys=st.integers(1, 1 << 20),
       sms=st.sampled_from([1, 108, 132]), unsplit=st.integers(1, 4), split=st.integers(1, 4),
       block_n=st.sampled_from([16, 32, 64]))
def test_split_choice_bounds(programs, max_keys, sms, unsplit, split, block_n):
    """A power of two up to MAX_SPLITS; a full wave unsplit; a split grid within one wave, of
    splits at least MIN_SPLIT_TILES key tiles long."""
    splits = choose_num_splits(programs, max_keys, sms, block_n=block_n,
                               programs_per_sm=(unsplit, split))
    assert splits & (splits - 1) == 0 and 1 <= splits <= MAX_SPLITS
    if programs >= unsplit * sms:
        assert splits == 1
    assert splits == 1 or (programs * splits <= split * sms
                           and max_keys >= splits * MIN_SPLIT_TILES * block_n)
