"""GPU probe: fp8 paged decode written in Triton's Gluon layer, where the kernel chooses its
layouts, against the committed fp8 kernel (kernels/paged_decode.py) and the bf16 kernel, on the
shapes of the fp8 table (bench_paged_decode_fp8.py) furthest from its 1.7x target.

What `tl.dot` does not allow (README, FP8 KV; benchmarks/probe_decode_sass.py): the probe swaps
the operands, S^T = K q^T and O^T = V^T P^T, so that a tile's tokens (and head_dim) are the
MMA's rows and the GQA group's 4 query heads its 8 columns (HMMA m16n8k16: half the MMAs of 16
padded query rows); the query heads stay in registers, laid out once as the B operand; K and
V^T are copied (cp.async) into a ring of STAGES shared-memory buffers STAGES - 1 tiles ahead
(one buffer: a tile ahead, refilled once every warp has read it) and read as 8-bit A operands
that are converted to float16 in registers, exact as in the committed kernel. The fp8 cache
holds V transposed in runs of 16 tokens (kernels/segments.py), so a V^T row's tokens are 16
contiguous bytes a run. Outputs are float32 (the committed kernel's are bfloat16, whose rounding
is most of its error against the reference).

Two kernels: _decode_fp8_gluon shares each tile among its 4 warps (the softmax's maximum and
sum cross warps every tile); "warps" is kernels/fp8_decode.py's, which gives each warp its own
share of every tile, with its own running maximum, sum and output merged once after the loop,
so the loop reduces nothing across warps (measured here first, at commit 263ecc7, as a copy
in this file). A probe, not a kernel of the product: contexts must be whole tiles (the
bench's are), and block sizes multiples of 16. _decode_fp8_gluon's split launches write no
partial results and run no combine (a lower bound on their time); the "warps" kernel's are
combined by kernels/split_kv.py's reduce kernel, and every launch of it is checked against the
reference over the dequantized cache (one-split launches of both). Writes
paged_decode_fp8_gluon_<gpu>.csv:

    PYTHONPATH=.:benchmarks python benchmarks/probe_fp8_gluon.py --out OUT
"""
from __future__ import annotations

import itertools
import math
import sys

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy, mma_v2

from bench_paged_decode_fp8 import Fp8Case, probe_main
from kernels import fp8_decode
from kernels.paged_decode import LOG2E
from kernels.segments import segment_table
from kernels.split_kv import partials, reduce_launch

GROUP, HEAD_DIM, NUM_KV_HEADS = 4, 128, 8  # bench_paged_decode's llama3-8b heads
# Kernel, tokens a tile, shared-memory stages, and a cap on registers a thread (None: the
# compiler's).
VARIANTS = (("gluon", 128, 1, 128), ("gluon", 64, 3, None), ("warps", 64, 2, None),
            ("warps", 64, 3, None), ("warps", 64, 4, None))


@gluon.jit
def _blocks(bt_row, tile, end, BLOCK_N: gl.constexpr, BLOCK_SIZE: gl.constexpr):
    """The block ids of the tile's tokens, in the layouts of the K and the V^T copies (0 from
    end on): loaded before a tile's step and used after it, so that the step hides them."""
    copy: gl.constexpr = gl.BlockedLayout([1, 16], [4, 8], [4, 1], [1, 0])
    tok_k = tile + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, copy))
    tok_v = tile + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, copy))
    return (gl.load(bt_row + tok_k // BLOCK_SIZE, mask=tok_k < end, other=0),
            gl.load(bt_row + tok_v // BLOCK_SIZE, mask=tok_v < end, other=0))


@gluon.jit
def _rows(block, Offsets, BLOCK_SIZE: gl.constexpr, BLOCKS_PER_SEGMENT: gl.constexpr,
          TOKEN: gl.constexpr, ALIGN: gl.constexpr):
    """Element offset of each block (KV head 0) from the base: its segment's offset and its
    place in the segment, BLOCK_SIZE tokens of TOKEN elements a block."""
    seg = block // BLOCKS_PER_SEGMENT
    return (gl.load(Offsets + seg) * ALIGN
            + (block - seg * BLOCKS_PER_SEGMENT).to(gl.int64) * (BLOCK_SIZE * TOKEN))


@gluon.jit
def _issue(k_buf, v_buf, k_blocks, v_blocks, K_base, V_base, K_offsets, V_offsets, kv_head,
           tile, end, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, NUM_KV_HEADS: gl.constexpr,
           BLOCK_SIZE: gl.constexpr, BLOCKS_PER_SEGMENT: gl.constexpr, ALIGN: gl.constexpr):
    """cp.async of the tile's K [BLOCK_N, head_dim] and V^T [head_dim, BLOCK_N], in blocks
    k_blocks and v_blocks (_blocks), into k_buf and v_buf (nothing for tokens from end on), one
    commit group."""
    RUN: gl.constexpr = 16
    TOKEN: gl.constexpr = NUM_KV_HEADS * HEAD_DIM
    copy: gl.constexpr = gl.BlockedLayout([1, 16], [4, 8], [4, 1], [1, 0])
    tok_k = tile + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, copy))
    col = kv_head * HEAD_DIM + gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, copy))
    k_rows = (_rows(k_blocks, K_offsets, BLOCK_SIZE, BLOCKS_PER_SEGMENT, TOKEN, ALIGN)
              + (tok_k % BLOCK_SIZE) * TOKEN)
    async_copy.async_copy_global_to_shared(k_buf, K_base + k_rows[:, None] + col[None, :],
                                           mask=(tok_k < end)[:, None])
    tok_v = tile + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, copy))
    row_v = kv_head * HEAD_DIM + gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(1, copy))
    v_runs = (_rows(v_blocks, V_offsets, BLOCK_SIZE, BLOCKS_PER_SEGMENT, TOKEN, ALIGN)
              + (tok_v % BLOCK_SIZE) // RUN * (RUN * TOKEN) + tok_v % RUN)
    v_ptrs = V_base + v_runs[None, :] + row_v[:, None] * RUN
    v_ptrs = gl.max_contiguous(gl.multiple_of(v_ptrs, [1, RUN]), [1, RUN])
    # A run is read whole or not at all (its first token decides), so the copies stay 16 bytes.
    async_copy.async_copy_global_to_shared(v_buf, v_ptrs, mask=(tok_v // RUN * RUN < end)[None, :])
    async_copy.commit_group()


@gluon.jit
def _decode_fp8_gluon(Q, K_base, V_base, K_offsets, V_offsets, K_scale, V_scale, Block_tables,
                      Context_lens, Out, stride_qb, stride_qh, stride_bt, stride_ob, stride_oh,
                      qk_scale, num_splits, GROUP: gl.constexpr, HEAD_DIM: gl.constexpr,
                      NUM_KV_HEADS: gl.constexpr, BLOCK_SIZE: gl.constexpr,
                      BLOCKS_PER_SEGMENT: gl.constexpr, BLOCK_N: gl.constexpr,
                      ALIGN: gl.constexpr, STAGES: gl.constexpr):
    G: gl.constexpr = 8  # the MMA's columns: the group's query heads, padded
    mma: gl.constexpr = gl.NVMMADistributedLayout([2, 0], [4, 1], [16, 8])
    a_op: gl.constexpr = gl.DotOperandLayout(0, mma, 4)
    b_op: gl.constexpr = gl.DotOperandLayout(1, mma, 4)
    # Rows of 128 bytes (K) and of BLOCK_N bytes (V^T), swizzled for conflict-free ldmatrix.
    k_shared: gl.constexpr = gl.SwizzledSharedLayout(16, 1, 8, [1, 0])
    v_shared: gl.constexpr = gl.SwizzledSharedLayout(16, 128 // BLOCK_N, BLOCK_N // 16, [1, 0])
    b = gl.program_id(0)
    kv_head = gl.program_id(1)
    split = gl.program_id(2)
    context = gl.load(Context_lens + b)
    split_tokens = gl.cdiv(gl.cdiv(context, num_splits), BLOCK_N) * BLOCK_N
    start = split * split_tokens
    end = gl.minimum(start + split_tokens, context)
    tiles = gl.cdiv(end - start, BLOCK_N)
    bt_row = Block_tables + b.to(gl.int64) * stride_bt

    d_b = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(1, b_op))
    g_b = gl.arange(0, G, layout=gl.SliceLayout(0, b_op))
    q_t = gl.load(Q + b * stride_qb + (kv_head * GROUP + g_b)[None, :] * stride_qh + d_b[:, None],
                  mask=(g_b < GROUP)[None, :], other=0.0)
    q_t = gl.minimum(gl.maximum(q_t.to(gl.float32), -65504.0), 65504.0).to(gl.float16)
    scale = qk_scale * gl.load(K_scale + kv_head)

    k_ring = gl.allocate_shared_memory(gl.float8e4nv, [STAGES, BLOCK_N, HEAD_DIM], k_shared)
    v_ring = gl.allocate_shared_memory(gl.float8e4nv, [STAGES, HEAD_DIM, BLOCK_N], v_shared)
    LEAD: gl.constexpr = max(STAGES - 1, 1)  # tiles copied ahead of the step
    for s in gl.static_range(LEAD):
        k_blocks, v_blocks = _blocks(bt_row, start + s * BLOCK_N, end, BLOCK_N, BLOCK_SIZE)
        _issue(k_ring.index(s), v_ring.index(s), k_blocks, v_blocks, K_base, V_base, K_offsets,
               V_offsets, kv_head, start + s * BLOCK_N, end, BLOCK_N, HEAD_DIM, NUM_KV_HEADS,
               BLOCK_SIZE, BLOCKS_PER_SEGMENT, ALIGN)
    m_i = gl.full([G], float("-inf"), gl.float32, gl.SliceLayout(0, mma))
    l_i = gl.zeros([G], gl.float32, gl.SliceLayout(0, mma))
    acc = gl.zeros([HEAD_DIM, G], gl.float32, mma)
    for i in range(tiles):
        async_copy.wait_group(LEAD - 1)
        gl.thread_barrier()
        ahead = start + (i + LEAD) * BLOCK_N
        k_blocks, v_blocks = _blocks(bt_row, ahead, end, BLOCK_N, BLOCK_SIZE)
        k = k_ring.index(i % STAGES).load(a_op).to(gl.float16)
        scores = mma_v2(k, q_t, gl.zeros([BLOCK_N, G], gl.float32, mma)) * scale
        m_new = gl.maximum(m_i, gl.max(scores, axis=0))
        alpha = gl.exp2(m_i - m_new)
        p = gl.exp2(scores - m_new[None, :])
        l_i = l_i * alpha + gl.sum(p, axis=0)
        v_t = v_ring.index(i % STAGES).load(a_op).to(gl.float16)
        acc = mma_v2(v_t, gl.convert_layout(p.to(gl.float16), b_op), acc * alpha[None, :])
        m_i = m_new
        if STAGES == 1:
            gl.thread_barrier()  # one buffer: every warp has read it before it is refilled
        _issue(k_ring.index((i + LEAD) % STAGES), v_ring.index((i + LEAD) % STAGES), k_blocks,
               v_blocks, K_base, V_base, K_offsets, V_offsets, kv_head, ahead, end, BLOCK_N,
               HEAD_DIM, NUM_KV_HEADS, BLOCK_SIZE, BLOCKS_PER_SEGMENT, ALIGN)
    async_copy.wait_group(0)
    out = acc / gl.where(l_i > 0, l_i, 1.0)[None, :] * gl.load(V_scale + kv_head)
    d_o = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(1, mma))
    g_o = gl.arange(0, G, layout=gl.SliceLayout(0, mma))
    gl.store(Out + b * stride_ob + (kv_head * GROUP + g_o)[None, :] * stride_oh + d_o[:, None],
             out, mask=(g_o < GROUP)[None, :])


def probe_call(quantized: Fp8Case, block_size: int, tables: torch.Tensor, out: torch.Tensor,
               kernel: str, block_n: int, stages: int, maxnreg: int | None, splits: int):
    """The probe's launch (the "warps" kernel's split launches followed by
    kernels/split_kv.py's reduce kernel), as a call that returns out."""
    k_segs, v_segs, bps = quantized.segments(block_size)
    table = segment_table(k_segs, v_segs)
    q, lens = quantized.case.q, quantized.case.context_lens()
    assert quantized.case.context % (block_n * splits) == 0, "the probe reads whole tiles"
    grid = (q.shape[0], NUM_KV_HEADS, splits)
    common = (q.stride(0), q.stride(1), tables.stride(0), out.stride(0), out.stride(1),
              LOG2E / math.sqrt(HEAD_DIM), splits)
    constexprs = dict(GROUP=GROUP, HEAD_DIM=HEAD_DIM, NUM_KV_HEADS=NUM_KV_HEADS,
                      BLOCK_SIZE=block_size, BLOCKS_PER_SEGMENT=bps, BLOCK_N=block_n, ALIGN=16,
                      STAGES=stages, num_warps=4, **({"maxnreg": maxnreg} if maxnreg else {}))
    inputs = (q, table.k_base, table.v_base, table.k_offsets, table.v_offsets, quantized.k_scale,
              quantized.v_scale, tables, lens, out)
    part_out, part_lse = partials(out, q.shape[0], splits)
    reduce = reduce_launch(q.shape[1], HEAD_DIM, splits, False, False, limit_rows=False)
    no_rows = torch.zeros(1, dtype=torch.int32, device=q.device)

    def call():
        if kernel == "warps":
            fp8_decode._fp8_decode_kernel[grid](
                *inputs, part_out, part_lse, *common[:5], 1, 1, *common[5:],
                SPLIT=splits > 1, **{k: v for k, v in constexprs.items()
                                     if k not in ("HEAD_DIM", "BLOCK_N")})
            if splits > 1:
                reduce((q.shape[0], q.shape[1], 1), part_out, part_lse, out, out.stride(0),
                       out.stride(1), splits, no_rows, 0)
        else:
            _decode_fp8_gluon[grid](*inputs, *common, **constexprs)
        return out
    return call


def variants(quantized: Fp8Case, block_size: int, tables: torch.Tensor, out: torch.Tensor):
    """probe_main's variants: every launch shape at 1-8 splits (the rows of complete launches
    checked)."""
    return [(f"{kernel} {block_n}:{stages}:{maxnreg or 'free'}", splits,
             probe_call(quantized, block_size, tables, out, kernel, block_n, stages, maxnreg,
                        splits), splits == 1 or kernel == "warps")
            for (kernel, block_n, stages, maxnreg), splits in itertools.product(VARIANTS,
                                                                                 (1, 2, 4, 8))]


def main() -> int:
    return probe_main(
        __doc__.splitlines()[0], "32x4096,64x4096,8x32768,32x32768,128x4096",
        "paged_decode_fp8_gluon", [
            "gluon B:S:R / warps B:S:R: this probe's kernels (the tile shared by the warps / "
            "each warp's own share of it), B tokens a tile, S shared-memory stages, at most R "
            "registers a thread; gluon's split rows run no combine (a lower bound on their "
            "time), warps' are combined by split_kv's reduce kernel (complete, and checked)",
            "rel_*: relative error of the first sequences' outputs against the reference over "
            "the dequantized fp8 cache and over the bf16 cache"], variants)


if __name__ == "__main__":
    sys.exit(main())
