"""Store new tokens' K and V into the cache slots the allocator chose.

Global slot id = block * block_size + offset in block (allocators/base.py); the block lives in
segment block // blocks_per_segment. One program copies one token's K and V for every KV head:
in the token-major layout of kernels/paged_decode.py that is one contiguous row per tensor (a
float8 cache's V, transposed in runs of tokens (kernels/segments.py), is one byte per run). A
negative slot id marks a padding token and is skipped, so a batch padded to a fixed size (for
CUDA graphs) needs no host-side filtering. Into a float8 e4m3 cache the tokens are quantized on
the way: divided by the caller's k_scale / v_scale and rounded (kernels/fp8.py).
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from kernels.fp8 import check_scales, is_fp8, quantize
from kernels.segments import ALIGN_BYTES, KVLayoutError, SegmentTable, segment_table


@triton.jit
def _write_kv_kernel(K_new, V_new, K_base, V_base, K_offsets, V_offsets, Slot_mapping,
                     K_scale, V_scale, stride_kt, stride_vt, stride_ks, stride_vs,
                     ROW: tl.constexpr, BLOCK_ROW: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                     BLOCKS_PER_SEGMENT: tl.constexpr, ALIGN: tl.constexpr,
                     HEAD_DIM: tl.constexpr, KV_FP8: tl.constexpr, EMULATE_FP8: tl.constexpr):
    t = tl.program_id(0)
    slot = tl.load(Slot_mapping + t)
    row_len = tl.where(slot >= 0, ROW, 0)
    slot = tl.maximum(slot, 0)
    block = slot // BLOCK_SIZE
    seg = block // BLOCKS_PER_SEGMENT
    block_start = (block - seg * BLOCKS_PER_SEGMENT) * (BLOCK_SIZE * ROW)
    cols = tl.arange(0, BLOCK_ROW)
    mask = cols < row_len
    k = tl.load(K_new + t.to(tl.int64) * stride_kt + cols, mask=mask)
    v = tl.load(V_new + t.to(tl.int64) * stride_vt + cols, mask=mask)
    offset = slot % BLOCK_SIZE
    k_at = tl.load(K_offsets + seg) * ALIGN + block_start + offset * ROW + cols
    v_block = tl.load(V_offsets + seg) * ALIGN + block_start
    if KV_FP8:
        # V transposed in runs of RUN tokens (kernels/segments.py value_run).
        RUN: tl.constexpr = min(BLOCK_SIZE & -BLOCK_SIZE, 16)
        v_at = v_block + offset // RUN * (RUN * ROW) + cols * RUN + offset % RUN
        head = cols // HEAD_DIM
        k_scale = tl.load(K_scale + head * stride_ks, mask=mask, other=1.0)
        v_scale = tl.load(V_scale + head * stride_vs, mask=mask, other=1.0)
        k = quantize(k.to(tl.float32), k_scale, EMULATE_FP8)
        v = quantize(v.to(tl.float32), v_scale, EMULATE_FP8)
    else:
        v_at = v_block + offset * ROW + cols
    tl.store(K_base + k_at, k.to(K_base.dtype.element_ty), mask=mask)
    tl.store(V_base + v_at, v.to(V_base.dtype.element_ty), mask=mask)


def write_kv(
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    k_segments: Sequence[torch.Tensor | None] | None,
    v_segments: Sequence[torch.Tensor | None] | None,
    slot_mapping: torch.Tensor,
    block_size: int,
    blocks_per_segment: int,
    *,
    table: SegmentTable | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> None:
    """Write k_new, v_new [T, Hkv, D] to global slots slot_mapping [T] int64 (< 0: skip).

    Each token's [Hkv, D] must be contiguous (a slice of a fused QKV projection is fine). A
    float8_e4m3fn cache needs k_scale and v_scale (float32, [1] or [Hkv], kernels/fp8.py) and
    stores round(k_new / k_scale), round(v_new / v_scale), clamped to +-448; any other cache
    stores k_new, v_new converted to its dtype and takes no scales.
    """
    table = segment_table(k_segments, v_segments) if table is None else table
    num_tokens, num_kv_heads, head_dim = k_new.shape
    if (block_size, blocks_per_segment) != (table.block_size, table.blocks_per_segment):
        raise KVLayoutError(f"block_size {block_size}, blocks_per_segment {blocks_per_segment} "
                            f"but segments are {table.block_size}, {table.blocks_per_segment}")
    if (num_kv_heads, head_dim) != (table.num_kv_heads, table.head_dim):
        raise KVLayoutError(f"new K/V have {num_kv_heads} heads of {head_dim}, cache has "
                            f"{table.num_kv_heads} of {table.head_dim}")
    for t in (k_new, v_new):
        if t.shape != k_new.shape or t.stride(2) != 1 or t.stride(1) != head_dim:
            raise KVLayoutError("k_new and v_new must be [T, Hkv, D] with each token contiguous")
    if slot_mapping.shape != (num_tokens,) or slot_mapping.dtype != torch.int64:
        raise KVLayoutError(f"slot_mapping must be int64 [{num_tokens}]")
    stride_ks, stride_vs = check_scales(table.dtype, k_scale, v_scale, num_kv_heads,
                                        table.k_base.device)
    if num_tokens == 0:
        return
    row = num_kv_heads * head_dim
    fp8 = is_fp8(table.dtype)
    # Without fp8 the scale pointers are never read: any tensor will do.
    _write_kv_kernel[(num_tokens,)](
        k_new, v_new, table.k_base, table.v_base, table.k_offsets, table.v_offsets,
        slot_mapping, k_scale if fp8 else slot_mapping, v_scale if fp8 else slot_mapping,
        k_new.stride(0), v_new.stride(0), stride_ks, stride_vs,
        ROW=row, BLOCK_ROW=triton.next_power_of_2(row), BLOCK_SIZE=block_size,
        BLOCKS_PER_SEGMENT=blocks_per_segment, ALIGN=ALIGN_BYTES // table.k_base.element_size(),
        HEAD_DIM=head_dim, KV_FP8=fp8, EMULATE_FP8=fp8 and table.k_base.device.type == "cpu",
        num_warps=4,
    )
