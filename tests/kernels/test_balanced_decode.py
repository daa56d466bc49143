"""The balanced decode kernel against the float64 gather-then-attend reference, over skewed
batches and work lists of every kind (rows cut across programs, programs without items)."""
import numpy as np
import pytest
import torch

from kernels.balanced_decode import launch_config, paged_decode_balanced, plan_work_lists
from kernels.paged_decode import DecodeShape
from kernels.reference import reference_decode
from kernels.segments import KVLayoutError, segment_table
from kernels.work_list import DecodeWorkList, WorkListPlan

HEAD_DIM = 32
SKEWED = [1, 3, 40, 700]
WITH_EMPTY = [0, 5, 0, 33]


def _query(batch, num_heads, dtype, device, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, num_heads, HEAD_DIM, generator=gen).to(device=device, dtype=dtype)


def _work(cache, programs, tile, window=None, device=None):
    plan = WorkListPlan(programs, tile, window)
    lens = cache.context_lens.cpu().numpy()
    data = torch.from_numpy(plan.build(lens)).to(device or cache.context_lens.device)
    return DecodeWorkList(plan, len(lens), data)


def _reference(cache, q, window=None):
    k64, v64 = cache.widened()
    return reference_decode(q.double(), k64, v64, cache.block_tables, cache.context_lens,
                            cache.blocks_per_segment, compute_dtype=torch.float64,
                            window=window)


def _cache(make_cache, lens, block_size, num_kv_heads=2, dtype=torch.float32, seed=0):
    return make_cache(context_lens=lens, num_kv_heads=num_kv_heads, head_dim=HEAD_DIM,
                      block_size=block_size, blocks_per_segment=max(4, 256 // block_size),
                      num_segments=4, dtype=dtype, seed=seed)


# programs 1: one program walks every row; 3: the long row cut across programs; 64: most
# programs get nothing. Tile 16: items start off the kernel's 128-key tiles.
@pytest.mark.parametrize("programs, tile", [(1, 128), (3, 128), (3, 16), (64, 16)])
@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize("lens", [SKEWED, WITH_EMPTY])
def test_float32_matches_reference(make_cache, rel_err, device, lens, block_size, group,
                                   programs, tile):
    cache = _cache(make_cache, lens, block_size, seed=block_size + group)
    q = _query(len(lens), 2 * group, torch.float32, device, seed=programs)
    out = paged_decode_balanced(q, cache.k_segments, cache.v_segments, cache.block_tables,
                                _work(cache, programs, tile), cache.blocks_per_segment)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert rel_err(out, _reference(cache, q)) < 1e-4
    for row in np.flatnonzero(np.array(lens) == 0):
        assert torch.equal(out[row], torch.zeros_like(out[row]))


@pytest.mark.parametrize("programs, tile", [(3, 16), (4, 64)])
def test_tiles_inside_one_block(make_cache, rel_err, device, programs, tile):
    """Blocks of 64 keys: 64-key tiles, one block-table lookup each, from items that start on
    the list's tiles (16 keys: inside a kernel tile) or on the kernel's."""
    cache = _cache(make_cache, SKEWED, 64, seed=5)
    assert launch_config(64).block_n == 64
    q = _query(4, 8, torch.float32, device, seed=5)
    out = paged_decode_balanced(q, cache.k_segments, cache.v_segments, cache.block_tables,
                                _work(cache, programs, tile), cache.blocks_per_segment)
    assert rel_err(out, _reference(cache, q)) < 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("block_size", [1, 16])
def test_half_precision_matches_reference(make_cache, rel_err, device, dtype, block_size):
    cache = _cache(make_cache, SKEWED, block_size, dtype=dtype, seed=7)
    q = _query(4, 8, dtype, device, seed=8)
    out = paged_decode_balanced(q, cache.k_segments, cache.v_segments, cache.block_tables,
                                _work(cache, 5, 16), cache.blocks_per_segment)
    assert out.dtype == dtype
    assert rel_err(out, _reference(cache, q)) < 1e-2


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("per_head", [True, False])
def test_fp8_matches_dequantized_reference(make_cache, rel_err, device, dtype, tolerance,
                                           per_head):
    cache = _cache(make_cache, SKEWED, 16, dtype=torch.bfloat16, seed=3)
    cache.scale_heads([1.0, 4.0], [1.0, 30.0])
    k8, v8, k_scale, v_scale = cache.quantized(per_head)
    q = _query(4, 8, dtype, device, seed=3)
    out = paged_decode_balanced(q, k8, v8, cache.block_tables, _work(cache, 3, 16),
                                cache.blocks_per_segment, k_scale=k_scale, v_scale=v_scale)
    ref = reference_decode(q.double(), k8, v8, cache.block_tables, cache.context_lens,
                           cache.blocks_per_segment, compute_dtype=torch.float64,
                           k_scale=k_scale, v_scale=v_scale)
    assert out.dtype == dtype
    assert rel_err(out, ref) < tolerance


@pytest.mark.parametrize("programs, tile", [(1, 128), (4, 16)])
@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize("window", [1, 6, 40, 1000])
def test_sliding_window_matches_reference(make_cache, rel_err, device, window, block_size,
                                          programs, tile):
    """Only the last `window` keys; blocks wholly before them point at NaN and are never
    read."""
    cache = _cache(make_cache, SKEWED, block_size, seed=window)
    cache.release_before([max(0, n - window) for n in SKEWED], poison=True)
    q = _query(4, 8, torch.float32, device, seed=window)
    out = paged_decode_balanced(q, cache.k_segments, cache.v_segments, cache.block_tables,
                                _work(cache, programs, tile, window),
                                cache.blocks_per_segment)
    assert rel_err(out, _reference(cache, q, window=window)) < 1e-4


def test_out_writes_into_a_row_slice(make_cache, rel_err, device):
    cache = _cache(make_cache, WITH_EMPTY, 16, seed=9)
    q = _query(4, 8, torch.float32, device, seed=9)
    full = torch.full((6, 8, HEAD_DIM), 7.0, device=device)
    out = paged_decode_balanced(q, cache.k_segments, cache.v_segments, cache.block_tables,
                                _work(cache, 3, 16), cache.blocks_per_segment, out=full[2:])
    assert out.data_ptr() == full[2:].data_ptr()
    assert rel_err(full[2:], _reference(cache, q)) < 1e-4
    assert torch.equal(full[:2], torch.full_like(full[:2], 7.0))


def test_new_lists_in_the_same_tensor(make_cache, rel_err, device):
    """As a replayed CUDA graph runs it: one launch shape, the list rewritten in place."""
    cache = make_cache(context_lens=[700] * 4, num_kv_heads=2, head_dim=HEAD_DIM,
                       block_size=16, blocks_per_segment=64, num_segments=3,
                       dtype=torch.float32, seed=11)
    q = _query(4, 8, torch.float32, device, seed=11)
    work = _work(cache, 3, 16)
    for lens in ([700, 40, 3, 1], [0, 0, 0, 0], SKEWED):
        cache.context_lens.copy_(torch.tensor(lens))
        work.data.copy_(torch.from_numpy(work.plan.build(np.array(lens))))
        out = paged_decode_balanced(q, cache.k_segments, cache.v_segments, cache.block_tables,
                                    work, cache.blocks_per_segment)
        if max(lens) == 0:
            assert torch.equal(out, torch.zeros_like(out))
        else:
            assert rel_err(out, _reference(cache, q)) < 1e-4


def test_plan_follows_the_launch_and_the_device(make_cache, device):
    cache = _cache(make_cache, SKEWED, 16)
    table = segment_table(cache.k_segments, cache.v_segments)
    q = _query(4, 8, torch.float32, device, seed=0)
    shape = DecodeShape.of(q, table, cache.block_tables, window=64)
    plan = plan_work_lists(shape)
    assert plan.tile_tokens == launch_config(16).block_n and plan.window == 64
    assert plan.programs >= 1 and plan_work_lists(shape, programs=9).programs == 9
    if device == "cpu":
        assert plan.programs == 1


def test_rejects_a_list_for_other_rows(make_cache, device):
    cache = _cache(make_cache, SKEWED, 16)
    q = _query(4, 8, torch.float32, device, seed=0)
    plan = WorkListPlan(3, 16)
    short = DecodeWorkList(plan, 3, torch.from_numpy(plan.build(np.array(SKEWED[:3]))))
    with pytest.raises(KVLayoutError, match="work list"):
        paged_decode_balanced(q, cache.k_segments, cache.v_segments, cache.block_tables, short,
                              cache.blocks_per_segment)
