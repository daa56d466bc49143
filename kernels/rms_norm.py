"""Residual add and RMSNorm in one pass, in Triton, with its torch reference.

A decoder layer adds each sublayer's output to the residual stream and normalises the sum for
the next sublayer. In torch that is about eight kernels, each reading and writing the whole
activation (some in float32); here one program per row reads the residual and the sublayer
output once and writes the new residual and the normalised row. The arithmetic follows
transformers' LlamaRMSNorm: the sum rounded to the activation dtype, the norm in float32,
rounded to the dtype before the weight multiplies it.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rms_norm_kernel(X, Delta, W, Out, stride_x, stride_d, stride_o, n_cols, eps,
                         HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_DELTA:
        d = tl.load(Delta + row * stride_d + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + d.to(tl.float32)).to(X.dtype.element_ty)
        tl.store(X + row * stride_x + cols, x, mask=mask)
    h = x.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(h * h, 0) / n_cols + eps)
    normed = (h * inv_rms).to(X.dtype.element_ty).to(tl.float32)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Out + row * stride_o + cols, (w * normed).to(Out.dtype.element_ty), mask=mask)


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x += delta (in place: x is the residual stream), then RMSNorm(x) * weight.

    x, delta [T, H] with contiguous rows; weight [H]. Returns (x, normed), normed a new [T, H]
    tensor in x's dtype."""
    rows, cols = x.shape
    if x.stride(1) != 1 or weight.shape != (cols,) or (
            delta is not None and (delta.shape != x.shape or delta.stride(1) != 1)):
        raise ValueError(f"add_rms_norm needs [T, H] rows with unit column stride and a [H] "
                         f"weight; got x {tuple(x.shape)}, weight {tuple(weight.shape)}")
    out = torch.empty(rows, cols, dtype=x.dtype, device=x.device)
    if rows == 0:
        return x, out
    block = triton.next_power_of_2(cols)
    _add_rms_norm_kernel[(rows,)](
        x, x if delta is None else delta, weight, out, x.stride(0),
        0 if delta is None else delta.stride(0), out.stride(0), cols, eps,
        HAS_DELTA=delta is not None, BLOCK=block, num_warps=8 if block >= 4096 else 4,
    )
    return x, out


def add_rms_norm_reference(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
                           eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """add_rms_norm in torch: transformers' operation order exactly."""
    if delta is not None:
        x.add_(delta)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return x, weight * h.to(x.dtype)
