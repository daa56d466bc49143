"""SiLU(gate) * up of a fused gate/up projection, in Triton, with its torch reference.

The MLP's gate and up projections are one GEMM whose output rows hold [gate | up]; torch's
F.silu(gate) * up reads and writes the intermediate activation three times, this kernel once.
The SiLU is rounded to the activation dtype before the product, as torch rounds it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

BLOCK_COLS = 1024


@triton.jit
def _silu_mul_kernel(GateUp, Out, stride_g, stride_o, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    gate = tl.load(GateUp + row * stride_g + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(GateUp + row * stride_g + n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    silu = (gate / (1.0 + tl.exp(-gate))).to(Out.dtype.element_ty).to(tl.float32)
    tl.store(Out + row * stride_o + cols, (silu * up).to(Out.dtype.element_ty), mask=mask)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up [T, 2 * I] (rows of [gate | up], unit column stride) -> silu(gate) * up [T, I]."""
    rows, width = gate_up.shape
    if width % 2 or gate_up.stride(1) != 1:
        raise ValueError(f"silu_mul needs [T, 2 * I] with unit column stride; got "
                         f"{tuple(gate_up.shape)} strides {gate_up.stride()}")
    cols = width // 2
    out = torch.empty(rows, cols, dtype=gate_up.dtype, device=gate_up.device)
    if rows == 0:
        return out
    block = min(BLOCK_COLS, triton.next_power_of_2(cols))
    _silu_mul_kernel[(rows, triton.cdiv(cols, block))](
        gate_up, out, gate_up.stride(0), out.stride(0), cols, BLOCK=block, num_warps=4)
    return out


def silu_mul_reference(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up
