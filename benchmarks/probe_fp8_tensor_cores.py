"""GPU probe: fp8 paged decode with both dots on Hopper's fp8 tensor cores, against the committed
fp8 kernel (kernels/paged_decode.py, which converts every e4m3 element to float16 for its dots)
and the bf16 kernel, on the shapes of the fp8 table (bench_paged_decode_fp8.py) furthest from
its 1.7x target.

Hopper multiplies e4m3 only in wgmma, whose tiles have 64 rows and more, and the GQA group of
a decode program has 4 query heads: so the probe's kernel swaps the operands, as decode kernels
for small groups do, and the tile's tokens are the rows. S^T = K q^T (K [tokens, head_dim] as
the cache stores it), then O^T = V^T P^T (the fp8 cache's V is stored transposed in runs of
tokens, kernels/segments.py, which is the layout this dot needs). Both dots take e4m3 operands,
so the query heads are quantized (a scale per head, amax / 448) and so are the weights P, as
FlashAttention-3's fp8 path does: the price is accuracy, reported as each output's relative
error against the reference over the dequantized cache (rel_dequantized; the committed kernel is
exact there but for rounding) and against bf16 (rel_bf16). A program looks up one block-table
entry per run of tokens for K and V alike.

The probe kernel's split launches write no partial results and run no combine, so its split
rows are a lower bound on its time; its one-split rows are complete. Writes
paged_decode_fp8_tensor_cores_<gpu>.csv:

    PYTHONPATH=.:benchmarks python benchmarks/probe_fp8_tensor_cores.py --out OUT
"""
from __future__ import annotations

import itertools
import math
import sys

import torch
import triton
import triton.language as tl

from bench_paged_decode_fp8 import Fp8Case, probe_main
from kernels.paged_decode import LOG2E
from kernels.segments import segment_table
from kernels.tl_helpers import normalise

GROUP, HEAD_DIM, NUM_KV_HEADS = 4, 128, 8  # bench_paged_decode's llama3-8b heads
# Launch shapes tried: tokens per tile and a cap on registers per thread (None: the compiler's).
VARIANTS = ((128, None), (128, 128), (64, None))


@triton.jit
def _tile_runs(bt_row, K_base, V_base, K_offsets, V_offsets, head_col, tile, end,
               BLOCK_SIZE: tl.constexpr, BLOCKS_PER_SEGMENT: tl.constexpr,
               BLOCK_N: tl.constexpr, TOKEN_STRIDE: tl.constexpr, ALIGN: tl.constexpr):
    """K [BLOCK_N, head_dim] and V^T [head_dim, BLOCK_N] of the tile from `tile`: one table
    lookup per run of RUN tokens (kernels/segments.py value_run); runs past end read as zero."""
    RUN: tl.constexpr = min(BLOCK_SIZE & -BLOCK_SIZE, 16)
    BLOCK_STRIDE: tl.constexpr = BLOCK_SIZE * TOKEN_STRIDE
    r = tl.arange(0, BLOCK_N // RUN)
    t = tl.arange(0, RUN)
    first = tile + r * RUN
    live = first < end
    block = tl.load(bt_row + first // BLOCK_SIZE, mask=live, other=0)
    seg = block // BLOCKS_PER_SEGMENT
    inner = ((block - seg * BLOCKS_PER_SEGMENT).to(tl.int64) * BLOCK_STRIDE
             + (first % BLOCK_SIZE) * TOKEN_STRIDE)
    k_rows = tl.load(K_offsets + seg, mask=live, other=0) * ALIGN + inner
    v_rows = tl.load(V_offsets + seg, mask=live, other=0) * ALIGN + inner
    k = tl.load(K_base + k_rows[:, None, None] + t[None, :, None] * TOKEN_STRIDE
                + head_col[None, None, :], mask=live[:, None, None], other=0.0)
    v = tl.load(V_base + v_rows[None, :, None] + head_col[:, None, None] * RUN
                + t[None, None, :], mask=live[None, :, None], other=0.0)
    return (tl.reshape(k, (BLOCK_N, head_col.shape[0])),
            tl.reshape(v, (head_col.shape[0], BLOCK_N)))


@triton.jit
def _decode_fp8_dots(Q, K_base, V_base, K_offsets, V_offsets, K_scale, V_scale, Block_tables,
                     Context_lens, Out, stride_qb, stride_qh, stride_bt, stride_ob, stride_oh,
                     qk_scale, num_splits, GROUP: tl.constexpr, BLOCK_G: tl.constexpr,
                     HEAD_DIM: tl.constexpr, NUM_KV_HEADS: tl.constexpr,
                     BLOCK_SIZE: tl.constexpr, BLOCKS_PER_SEGMENT: tl.constexpr,
                     BLOCK_N: tl.constexpr, ALIGN: tl.constexpr):
    b = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    context = tl.load(Context_lens + b)
    split_tokens = tl.cdiv(tl.cdiv(context, num_splits), BLOCK_N) * BLOCK_N
    start = split * split_tokens
    end = tl.minimum(start + split_tokens, context)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, HEAD_DIM)
    heads = kv_head * GROUP + g
    q_t = tl.load(Q + b * stride_qb + heads[None, :] * stride_qh + d[:, None],
                  mask=(g < GROUP)[None, :], other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(q_t), 0)
    q_scale = tl.where(amax > 0, amax / 448.0, 1.0)
    q_t = (q_t / q_scale[None, :]).to(tl.float8e4nv)
    col_scale = q_scale * (qk_scale * tl.load(K_scale + kv_head))
    bt_row = Block_tables + b.to(tl.int64) * stride_bt
    head_col = kv_head * HEAD_DIM + d
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([HEAD_DIM, BLOCK_G], tl.float32)
    for tile in range(start, end, BLOCK_N):
        k, v_t = _tile_runs(bt_row, K_base, V_base, K_offsets, V_offsets, head_col, tile, end,
                            BLOCK_SIZE, BLOCKS_PER_SEGMENT, BLOCK_N, NUM_KV_HEADS * HEAD_DIM,
                            ALIGN)
        scores = tl.dot(k, q_t) * col_scale[None, :]
        scores = tl.where((tile + tl.arange(0, BLOCK_N) < end)[:, None], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, 0))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(scores - m_new[None, :])
        l_i = l_i * alpha + tl.sum(p, 0)
        acc = acc * alpha[None, :] + tl.dot(v_t, p.to(tl.float8e4nv))
        m_i = m_new
    out = tl.trans(normalise(tl.trans(acc), l_i)) * tl.load(V_scale + kv_head)
    tl.store(Out + b * stride_ob + heads[None, :] * stride_oh + d[:, None], out,
             mask=(g < GROUP)[None, :])


def probe_call(quantized: Fp8Case, block_size: int, tables: torch.Tensor, out: torch.Tensor,
               block_n: int, maxnreg: int | None, splits: int):
    k_segs, v_segs, bps = quantized.segments(block_size)
    table = segment_table(k_segs, v_segs)
    q, lens = quantized.case.q, quantized.case.context_lens()
    options = dict(num_warps=4, num_stages=2, **({"maxnreg": maxnreg} if maxnreg else {}))
    grid = (q.shape[0], NUM_KV_HEADS, splits)

    def call():
        _decode_fp8_dots[grid](
            q, table.k_base, table.v_base, table.k_offsets, table.v_offsets, quantized.k_scale,
            quantized.v_scale, tables, lens, out, q.stride(0), q.stride(1), tables.stride(0),
            out.stride(0), out.stride(1), LOG2E / math.sqrt(HEAD_DIM), splits, GROUP=GROUP,
            BLOCK_G=16, HEAD_DIM=HEAD_DIM, NUM_KV_HEADS=NUM_KV_HEADS, BLOCK_SIZE=block_size,
            BLOCKS_PER_SEGMENT=bps, BLOCK_N=block_n, ALIGN=16, **options)
        return out
    return call


def variants(quantized: Fp8Case, block_size: int, tables: torch.Tensor, out: torch.Tensor):
    """probe_main's variants: every launch shape at 1-8 splits (one-split rows checked)."""
    return [(f"fp8 dots {block_n}:{maxnreg or 'free'}", splits,
             probe_call(quantized, block_size, tables, out, block_n, maxnreg, splits), splits == 1)
            for (block_n, maxnreg), splits in itertools.product(VARIANTS, (1, 2, 4, 8))]


def main() -> int:
    return probe_main(
        __doc__.splitlines()[0], "32x4096,64x4096,8x32768,128x4096,32x32768",
        "paged_decode_fp8_tensor_cores", [
            "fp8 dots B:R: this probe's kernel, B tokens a tile, at most R registers a thread; "
            "its split rows run no combine (a lower bound on their time)",
            "rel_*: relative error of the first sequences' outputs against the reference over "
            "the dequantized fp8 cache and over the bf16 cache"], variants)


if __name__ == "__main__":
    sys.exit(main())
