"""The Triton KV write kernel: new tokens land in the slots the allocator chose, nowhere else."""
import pytest
import torch

from kernels.fp8 import FP8_DTYPE, kv_scales
from kernels.kv_write import write_kv
from kernels.paged_decode import paged_decode
from kernels.segments import KVLayoutError, segment_table, token_values, value_shape
from kernels.reference import quantize_kv, reference_decode


def _empty_segments(num_segments, shape, dtype, device, unbacked=()):
    return [None if s in unbacked else torch.zeros(shape, dtype=dtype, device=device)
            for s in range(num_segments)]


@pytest.mark.parametrize("block_size", [1, 16, 5])
def test_writes_exactly_the_mapped_slots(device, block_size):
    bps, heads, dim = 3, 2, 16
    shape = (bps, block_size, heads, dim)
    k_segs = _empty_segments(4, shape, torch.bfloat16, device, unbacked=(1,))
    v_segs = _empty_segments(4, shape, torch.bfloat16, device, unbacked=(1,))
    slots_per_segment = bps * block_size
    backed = [s for s in range(4 * slots_per_segment) if s // slots_per_segment != 1]
    gen = torch.Generator().manual_seed(block_size)
    chosen = [backed[i] for i in torch.randperm(len(backed), generator=gen)[:7].tolist()]
    slots = torch.tensor(chosen + [-1], dtype=torch.int64, device=device)
    k_new = torch.randn(8, heads, dim, generator=gen).to(device=device, dtype=torch.bfloat16)
    v_new = torch.randn(8, heads, dim, generator=gen).to(device=device, dtype=torch.bfloat16)

    write_kv(k_new, v_new, k_segs, v_segs, slots, block_size, bps)

    for segs, new in ((k_segs, k_new), (v_segs, v_new)):
        flat = torch.cat([t if t is not None else torch.zeros_like(k_segs[0]) for t in segs])
        flat = flat.view(-1, heads, dim)
        written = flat.abs().sum(dim=(1, 2)).nonzero().flatten().tolist()
        assert sorted(written) == sorted(chosen)
        for i, slot in enumerate(chosen):
            assert torch.equal(flat[slot], new[i])


def test_write_then_decode_matches_reference(device, rel_err):
    """Prefill a sequence token by token through write_kv, then attend over it."""
    block_size, bps, heads, dim, context = 4, 4, 2, 32, 21
    shape = (bps, block_size, heads, dim)
    k_segs = _empty_segments(3, shape, torch.float32, device)
    v_segs = _empty_segments(3, shape, torch.float32, device)
    table = segment_table(k_segs, v_segs)
    blocks = torch.tensor([7, 2, 11, 4, 9, 0], dtype=torch.int32)
    positions = torch.arange(context)
    slots = (blocks[positions // block_size].long() * block_size + positions % block_size)
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(context, 3 * heads * dim, generator=gen).to(device)
    k_new = qkv[:, heads * dim:2 * heads * dim].view(context, heads, dim)
    v_new = qkv[:, 2 * heads * dim:].view(context, heads, dim)
    write_kv(k_new, v_new, None, None, slots.to(device), block_size, bps, table=table)

    q = torch.randn(1, 4, dim, generator=gen).to(device)
    block_tables = blocks[None].to(device)
    lens = torch.tensor([context], dtype=torch.int32, device=device)
    out = paged_decode(q, None, None, block_tables, lens, bps, num_splits=2, table=table)
    k_ref = torch.softmax((q.double().view(2, 2, dim) @ k_new.double().permute(1, 2, 0))
                          / dim ** 0.5, dim=-1) @ v_new.double().transpose(0, 1)
    assert rel_err(out, k_ref.view(1, 4, dim)) < 1e-4
    ref = reference_decode(q.double(), *[[t.double() for t in s] for s in (k_segs, v_segs)],
                           block_tables, lens, bps, compute_dtype=torch.float64)
    assert rel_err(out, ref) < 1e-4


def test_rejects_wrong_layout(device):
    segs = _empty_segments(1, (2, 4, 2, 16), torch.float32, device)
    k_new = torch.zeros(3, 2, 16, device=device)
    slots = torch.arange(3, device=device)
    with pytest.raises(KVLayoutError, match="block_size"):
        write_kv(k_new, k_new, segs, segs, slots, 8, 2)
    with pytest.raises(KVLayoutError, match="int64"):
        write_kv(k_new, k_new, segs, segs, slots.int(), 4, 2)
    with pytest.raises(KVLayoutError, match="contiguous"):
        write_kv(k_new.transpose(1, 2).contiguous().transpose(1, 2), k_new, segs, segs,
                 slots, 4, 2)


def _flat_bits(segments, like, transposed=False):
    """Every slot's [Hkv, D] of an fp8 segment list as uint8 bit patterns (unbacked: zeros);
    transposed: V segments, stored transposed in runs."""
    flat = torch.cat([(token_values if transposed else torch.clone)(
        t if t is not None else torch.zeros_like(like)) for t in segments])
    return flat.view(torch.uint8).reshape(-1, *flat.shape[2:]).cpu()


# e4m3 around 1 has steps of 1/8: 1.0625 and 1.1875 are ties (to even: 1.0, 1.25), 1.9375
# rounds up across the binade to 2.0, 480 saturates to 448, 2 ** -10 and 3 * 2 ** -10 are
# subnormal ties (to 0 and 2 ** -8), 0.0137 lies between the subnormals and 2 ** -6.
EDGE_VALUES = [1.0625, 1.1875, 1.9375, -1.9375, 448.0, 480.0, -1e6, 2.0 ** -10,
               3 * 2.0 ** -10, 0.0137, 0.015625, -0.0, 0.0, 255.0, 300.0, 3.3e-3]


@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("block_size", [1, 16, 5, 32])
def test_fp8_write_stores_the_reference_rounding(device, block_size, per_head):
    """Quantized on write: the stored bits are kernels.reference.quantize_kv's, ties to even,
    saturation and subnormals included, per-tensor or per-head scales."""
    bps, heads, dim = 3, 2, 16
    shape = (bps, block_size, heads, dim)
    k_segs = _empty_segments(3, shape, FP8_DTYPE, device, unbacked=(1,))
    v_segs = _empty_segments(3, value_shape(shape, FP8_DTYPE), FP8_DTYPE, device, unbacked=(1,))
    slots_per_segment = bps * block_size
    backed = [s for s in range(3 * slots_per_segment) if s // slots_per_segment != 1]
    gen = torch.Generator().manual_seed(block_size)
    chosen = [backed[i] for i in torch.randperm(len(backed), generator=gen)[:6].tolist()]
    slots = torch.tensor(chosen + [-1], dtype=torch.int64, device=device)
    k_new = torch.randn(7, heads, dim, generator=gen) * torch.tensor([1.0, 50.0])[:, None]
    v_new = torch.randn(7, heads, dim, generator=gen)
    k_new[0, 0] = torch.tensor(EDGE_VALUES)
    v_new[1, 1] = -torch.tensor(EDGE_VALUES)
    # Scale 1 for K head 0, so that the edge values are what is rounded.
    k_scale = torch.tensor([1.0, 0.25] if per_head else [1.0], device=device)
    v_scale = torch.tensor([1.0, 0.5] if per_head else [1.0], device=device)
    k_new, v_new = k_new.to(device), v_new.to(device)

    write_kv(k_new, v_new, k_segs, v_segs, slots, block_size, bps, k_scale=k_scale,
             v_scale=v_scale)

    for segs, new, scale, transposed in ((k_segs, k_new, k_scale, False),
                                         (v_segs, v_new, v_scale, True)):
        flat = _flat_bits(segs, next(t for t in segs if t is not None), transposed)
        expected = quantize_kv(new, scale).view(torch.uint8).cpu()
        written = flat.view(flat.shape[0], -1).ne(0).any(dim=1).nonzero().flatten().tolist()
        assert set(written) <= set(chosen)
        for i, slot in enumerate(chosen):
            assert torch.equal(flat[slot], expected[i]), (slot, flat[slot], expected[i])


def test_fp8_write_then_decode(device, rel_err):
    """bfloat16 K/V written into an fp8 cache, then attended over: the reference over the
    dequantized cache agrees."""
    block_size, bps, heads, dim, context = 4, 4, 2, 32, 21
    shape = (bps, block_size, heads, dim)
    k_segs = _empty_segments(3, shape, FP8_DTYPE, device)
    v_segs = _empty_segments(3, value_shape(shape, FP8_DTYPE), FP8_DTYPE, device)
    blocks = torch.tensor([7, 2, 11, 4, 9, 0], dtype=torch.int32)
    positions = torch.arange(context)
    slots = (blocks[positions // block_size].long() * block_size + positions % block_size)
    gen = torch.Generator().manual_seed(0)
    k_new = torch.randn(context, heads, dim, generator=gen).to(device, torch.bfloat16)
    v_new = torch.randn(context, heads, dim, generator=gen).to(device, torch.bfloat16)
    k_scale, v_scale = kv_scales(k_new, per_head=True), kv_scales(v_new)
    write_kv(k_new, v_new, k_segs, v_segs, slots.to(device), block_size, bps, k_scale=k_scale,
             v_scale=v_scale)

    q = torch.randn(1, 4, dim, generator=gen).to(device, torch.bfloat16)
    block_tables = blocks[None].to(device)
    lens = torch.tensor([context], dtype=torch.int32, device=device)
    out = paged_decode(q, k_segs, v_segs, block_tables, lens, bps, num_splits=2,
                       k_scale=k_scale, v_scale=v_scale)
    ref = reference_decode(q.double(), k_segs, v_segs, block_tables, lens, bps,
                           compute_dtype=torch.float64, k_scale=k_scale, v_scale=v_scale)
    assert rel_err(out, ref) < 1e-2


def test_fp8_scales_are_checked(device):
    k_new = torch.zeros(3, 2, 16, device=device)
    slots = torch.arange(3, device=device)
    fp8 = _empty_segments(1, (2, 4, 2, 16), FP8_DTYPE, device)
    fp8_v = _empty_segments(1, (2, 1, 2, 16, 4), FP8_DTYPE, device)
    plain = _empty_segments(1, (2, 4, 2, 16), torch.float32, device)
    one = torch.ones(1, device=device)
    with pytest.raises(KVLayoutError, match="v_scale"):
        write_kv(k_new, k_new, fp8, fp8_v, slots, 4, 2, k_scale=one)
    with pytest.raises(KVLayoutError, match="one per KV head"):
        write_kv(k_new, k_new, fp8, fp8_v, slots, 4, 2, k_scale=one, v_scale=torch.ones(
            3, device=device))
    with pytest.raises(KVLayoutError, match="scales apply"):
        write_kv(k_new, k_new, plain, plain, slots, 4, 2, k_scale=one, v_scale=one)
