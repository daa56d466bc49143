"""Triton device functions shared by the paged attention kernels (kernels/paged_decode.py,
kernels/paged_prefill.py, kernels/split_kv.py): one addressing of the paged cache, and the
dtype handling that keeps the GPU's and the interpreter's arithmetic alike."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def tile_rows(bt_row, K_offsets, V_offsets, tile, tok, valid,
              BLOCK_SIZE: tl.constexpr, BLOCKS_PER_SEGMENT: tl.constexpr, BLOCK_N: tl.constexpr,
              BLOCK_STRIDE: tl.constexpr, TOKEN_STRIDE: tl.constexpr, ALIGN: tl.constexpr):
    """Element offsets from K_base and V_base of the tile's tokens `tok`, KV head 0: one
    addressing of the paged cache (block table, then segment table) for both kernels."""
    if BLOCK_SIZE % BLOCK_N == 0:
        # The tile lies inside one block: one table lookup, rows at a fixed stride.
        block = tl.load(bt_row + tile // BLOCK_SIZE)
        seg = block // BLOCKS_PER_SEGMENT
        inner = ((block - seg * BLOCKS_PER_SEGMENT).to(tl.int64) * BLOCK_STRIDE
                 + (tok % BLOCK_SIZE) * TOKEN_STRIDE)
        k_rows = tl.load(K_offsets + seg) * ALIGN + inner
        v_rows = tl.load(V_offsets + seg) * ALIGN + inner
    else:
        # One lookup per token, shared by K and V.
        block = tl.load(bt_row + tok // BLOCK_SIZE, mask=valid, other=0)
        seg = block // BLOCKS_PER_SEGMENT
        inner = ((block - seg * BLOCKS_PER_SEGMENT).to(tl.int64) * BLOCK_STRIDE
                 + (tok % BLOCK_SIZE) * TOKEN_STRIDE)
        k_rows = tl.load(K_offsets + seg, mask=valid, other=0) * ALIGN + inner
        v_rows = tl.load(V_offsets + seg, mask=valid, other=0) * ALIGN + inner
    return k_rows, v_rows


@triton.jit
def round_to_bf16(x):
    """float32 x rounded to the nearest bfloat16 (ties to even), still as float32."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def saturate_to_fp16(x):
    """x as float16, clamped to float16's finite range rather than overflowing to inf."""
    return tl.clamp(x.to(tl.float32), -65504.0, 65504.0).to(tl.float16)
