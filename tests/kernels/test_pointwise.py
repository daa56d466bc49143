"""The fused residual-add + RMSNorm, SiLU * up and rotary kernels against their torch
references, on awkward shapes (widths that are no power of two, strided rows, one row)."""
import pytest
import torch

from kernels.rms_norm import add_rms_norm, add_rms_norm_reference
from kernels.rotary import rotary, rotary_reference
from kernels.swiglu import silu_mul, silu_mul_reference

# The interpreter rounds float32 -> bfloat16 by truncation, the GPU to nearest: one bf16 ulp.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _rows(rows, cols, dtype, device, gen, pad=0):
    """[rows, cols] with a row stride of cols + pad (a view into a wider tensor)."""
    wide = (torch.randn(rows, cols + pad, generator=gen) * 2).to(device=device, dtype=dtype)
    return wide[:, :cols]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows,cols,pad", [(1, 48, 0), (5, 200, 8), (3, 1000, 0)])
@pytest.mark.parametrize("with_delta", [True, False])
def test_add_rms_norm_matches_reference(device, dtype, rows, cols, pad, with_delta):
    gen = torch.Generator().manual_seed(rows * cols + pad)
    x = _rows(rows, cols, dtype, device, gen, pad)
    delta = _rows(rows, cols, dtype, device, gen) if with_delta else None
    weight = (1 + 0.1 * torch.randn(cols, generator=gen)).to(device=device, dtype=dtype)
    ref_x, ref = add_rms_norm_reference(x.clone(), delta, weight, 1e-5)
    got_x, got = add_rms_norm(x, delta, weight, 1e-5)
    assert got_x.data_ptr() == x.data_ptr()  # the residual is updated in place
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(got_x, ref_x, rtol=tol, atol=tol)
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows,cols,pad", [(1, 24, 0), (4, 1500, 6), (7, 96, 0)])
def test_silu_mul_matches_reference(device, dtype, rows, cols, pad):
    gen = torch.Generator().manual_seed(rows + cols)
    gate_up = _rows(rows, 2 * cols, dtype, device, gen, pad)
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(silu_mul(gate_up), silu_mul_reference(gate_up), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("tokens,heads,dim", [(1, 3, 16), (5, 5, 64), (2, 12, 128)])
def test_rotary_matches_reference(device, dtype, tokens, heads, dim):
    """q and k heads as the decoder hands them over: a slice of fused QKV rows (v after them)."""
    gen = torch.Generator().manual_seed(tokens * heads + dim)
    qkv = torch.randn(tokens, (heads + 2) * dim, generator=gen).to(device=device, dtype=dtype)
    qk = qkv[:, : heads * dim].view(tokens, heads, dim)
    angles = torch.rand(tokens, dim // 2, generator=gen) * 100
    emb = torch.cat([angles, angles], dim=-1)
    sin = emb.sin()
    signed = torch.cat([-sin[:, : dim // 2], sin[:, dim // 2:]], dim=-1)
    cos = emb.cos().to(device=device, dtype=dtype)[:, None, :]
    signed = signed.to(device=device, dtype=dtype)[:, None, :]
    v_before = qkv[:, heads * dim:].clone()
    ref = rotary_reference(qk, cos, signed)
    got = rotary(qk, cos, signed)
    assert got.data_ptr() == qkv.data_ptr()  # in place
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
    if dtype == torch.float32:
        assert torch.equal(got, ref)
    assert torch.equal(qkv[:, heads * dim:], v_before)


def test_empty_batches_and_bad_shapes(device):
    x = torch.zeros(0, 32, device=device)
    assert add_rms_norm(x, None, torch.ones(32, device=device), 1e-5)[1].shape == (0, 32)
    assert silu_mul(torch.zeros(0, 64, device=device)).shape == (0, 32)
    with pytest.raises(ValueError):
        silu_mul(torch.zeros(2, 7, device=device))
    with pytest.raises(ValueError):
        add_rms_norm(torch.zeros(2, 8, device=device), None, torch.ones(4, device=device), 1e-5)
    with pytest.raises(ValueError):
        rotary(torch.zeros(2, 3, 16, device=device), torch.zeros(2, 16, device=device),
               torch.zeros(2, 16, device=device))
