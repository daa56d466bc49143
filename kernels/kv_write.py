"""Store new tokens' K and V into the cache slots the allocator chose.

Global slot id = block * block_size + offset in block (allocators/base.py); the block lives in
segment block // blocks_per_segment. One program copies one token's K and V for every KV head:
in the token-major layout of kernels/paged_decode.py that is one contiguous row per tensor. A
negative slot id marks a padding token and is skipped, so a batch padded to a fixed size (for
CUDA graphs) needs no host-side filtering.
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

from kernels.segments import ALIGN_BYTES, KVLayoutError, SegmentTable, segment_table


@triton.jit
def _write_kv_kernel(K_new, V_new, K_base, V_base, K_offsets, V_offsets, Slot_mapping,
                     stride_kt, stride_vt,
                     ROW: tl.constexpr, BLOCK_ROW: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                     BLOCKS_PER_SEGMENT: tl.constexpr, ALIGN: tl.constexpr):
    t = tl.program_id(0)
    slot = tl.load(Slot_mapping + t)
    row_len = tl.where(slot >= 0, ROW, 0)
    slot = tl.maximum(slot, 0)
    block = slot // BLOCK_SIZE
    seg = block // BLOCKS_PER_SEGMENT
    inner = (block - seg * BLOCKS_PER_SEGMENT) * (BLOCK_SIZE * ROW) + (slot % BLOCK_SIZE) * ROW
    cols = tl.arange(0, BLOCK_ROW)
    mask = cols < row_len
    k = tl.load(K_new + t.to(tl.int64) * stride_kt + cols, mask=mask)
    v = tl.load(V_new + t.to(tl.int64) * stride_vt + cols, mask=mask)
    k_row = tl.load(K_offsets + seg) * ALIGN + inner
    v_row = tl.load(V_offsets + seg) * ALIGN + inner
    tl.store(K_base + k_row + cols, k.to(K_base.dtype.element_ty), mask=mask)
    tl.store(V_base + v_row + cols, v.to(V_base.dtype.element_ty), mask=mask)


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
) -> None:
    """Write k_new, v_new [T, Hkv, D] to global slots slot_mapping [T] int64 (< 0: skip).

    Each token's [Hkv, D] must be contiguous (a slice of a fused QKV projection is fine).
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
    if num_tokens == 0:
        return
    row = num_kv_heads * head_dim
    _write_kv_kernel[(num_tokens,)](
        k_new, v_new, table.k_base, table.v_base, table.k_offsets, table.v_offsets,
        slot_mapping, k_new.stride(0), v_new.stride(0),
        ROW=row, BLOCK_ROW=triton.next_power_of_2(row), BLOCK_SIZE=block_size,
        BLOCKS_PER_SEGMENT=blocks_per_segment, ALIGN=ALIGN_BYTES // table.k_base.element_size(),
        num_warps=4,
    )
