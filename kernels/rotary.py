"""Rotary position embedding of the query and key heads in one pass, in Triton, with its torch
reference.

The decoder rotates the query and key heads of its fused QKV projection with the step's cos and
sign-folded sin tables: x * cos + halves_swapped(x) * signed_sin, where halves_swapped([x1, x2])
is [x2, x1] and signed_sin is sin with its first half negated (rotate_half(x) * sin exactly). In
torch that is four kernels over every q and k head (a copy for the swap, two products, a sum);
here one program per token rotates all of its heads in place. Each product is rounded to the
activation dtype before the sum, and the two are not fused into one multiply-add, as torch
computes them.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rotary_kernel(X, Cos, Sin, stride_xt, stride_xh, stride_ct, stride_st, num_heads,
                   HALF: tl.constexpr, BLOCK_H: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    h = tl.arange(0, BLOCK_H)
    d = tl.arange(0, HALF)
    mask = (h < num_heads)[:, None]
    first = X + t * stride_xt + h[:, None] * stride_xh + d[None, :]
    x1 = tl.load(first, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(first + HALF, mask=mask, other=0.0).to(tl.float32)
    c1 = tl.load(Cos + t * stride_ct + d).to(tl.float32)[None, :]
    c2 = tl.load(Cos + t * stride_ct + HALF + d).to(tl.float32)[None, :]
    s1 = tl.load(Sin + t * stride_st + d).to(tl.float32)[None, :]
    s2 = tl.load(Sin + t * stride_st + HALF + d).to(tl.float32)[None, :]
    dt = X.dtype.element_ty
    # A product of two half-precision values is exact in float32, so rounding it to dt gives
    # torch's product; in float32 it is torch's product as it stands.
    out1 = (x1 * c1).to(dt).to(tl.float32) + (x2 * s1).to(dt).to(tl.float32)
    out2 = (x2 * c2).to(dt).to(tl.float32) + (x1 * s2).to(dt).to(tl.float32)
    tl.store(first, out1.to(dt), mask=mask)
    tl.store(first + HALF, out2.to(dt), mask=mask)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, H, D] rotated in place by cos and signed sin ([T, 1, D], x's dtype, unit last
    stride); returns x. x's heads may be a slice of wider rows (q and k of a fused QKV)."""
    tokens, heads, dim = x.shape
    if (x.stride(2) != 1 or dim & (dim - 1) or dim < 2
            or any(t.shape != (tokens, 1, dim) or t.stride(2) != 1 or t.dtype != x.dtype
                   for t in (cos, sin))):
        raise ValueError(f"rotary needs x [T, H, D] (D a power of two) with unit last stride "
                         f"and cos, sin [T, 1, D] of its dtype; got x {tuple(x.shape)} "
                         f"{x.dtype}, cos {tuple(cos.shape)} {cos.dtype}")
    if tokens == 0:
        return x
    _rotary_kernel[(tokens,)](
        x, cos, sin, x.stride(0), x.stride(1), cos.stride(0), sin.stride(0), heads,
        HALF=dim // 2, BLOCK_H=triton.next_power_of_2(heads), num_warps=4,
        enable_fp_fusion=False,
    )
    return x


def rotary_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """rotary in torch (a new tensor): transformers' apply_rotary_pos_emb with the sign folded
    into sin, which is exact (negation is)."""
    return x * cos + _swap_halves(x) * sin


def _swap_halves(x: torch.Tensor) -> torch.Tensor:
    """[x2, x1] for x = [x1, x2] along the last dimension (rotate_half without the sign)."""
    return x.unflatten(-1, (2, -1)).flip(-2).flatten(-2)
