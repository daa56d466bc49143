"""Paged decode over an fp8 KV cache on the GPU, written in Triton's Gluon layer: the fp8 path of
kernels/paged_decode.py wherever `supported` holds (the Triton kernel there stays the path of
every other case, and of the CPU, where the interpreter runs no Gluon).

Why not `tl.dot` (README, FP8 KV; benchmarks/probe_decode_sass.py): beside an 8-bit operand
Triton lays the float16 one out 4 elements a thread along k and reloads the loop-invariant
queries every tile, and ptxas spends about a sixth of the loop moving fragments into place.
Here the operands are swapped, S^T = K q^T and O^T = V^T P^T: a tile's tokens (and head_dim) are
the MMA's rows and the GQA group's query heads its 8 columns (HMMA m16n8k16, half the MMAs of 16
padded query rows), and the queries stay in registers as the B operand. Each of the WARPS warps
takes its own 16 tokens of every tile (64 tokens at 4 warps; a warp's 16 lie in one block: one
lookup of it, a tile before its copy), copies them itself (cp.async into STAGES shared-memory
buffers in turn, STAGES - 1 tiles ahead) and keeps its own running maximum, sum and output,
merged once after the loop: the loop reduces nothing across warps, and holds one barrier a tile
(the buffers are separate allocations, so that the compiler sees a tile's copy and the step
before it touch different memory).
K and V^T are read as 8-bit A operands and converted to float16 in registers, which holds every
e4m3 value exactly, so the kernel computes attention over exactly the dequantized cache; the
scales are applied once (K's into the score scale, V's into the output). The fp8 cache holds V
transposed in runs of 16 tokens (kernels/segments.py), so a V^T row's tokens are 16 contiguous
bytes a run. Split launches write normalised partial outputs and base-2 log-sum-exps, combined
by kernels/split_kv.py's reduce kernel. Measured against the Triton kernel as a probe first
(benchmarks/probe_fp8_gluon.py, benchmarks/results/tuning/paged_decode_fp8_gluon_h200.csv).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy, mma_v2

from kernels import occupancy
from kernels.decode_launch import choose_fp8_num_splits
from kernels.fp8 import is_fp8
from kernels.launch import DirectLaunch
from kernels.segments import ALIGN_BYTES, VALUE_RUN, SegmentTable
from kernels.split_kv import decode_partials, reduce_launch

HEAD_DIM = 128  # the copies' layouts cover a 128-byte row of K per token
MAX_GROUP = 8  # query heads per KV head: the MMA's columns
# A program's warps, each its own share of every tile. 8 (64 of 128 tokens each, 2 programs an
# SM at 2 or 3 buffers) ran slower at every split count (benchmarks/probe_fp8_splits.py).
WARPS = 4
# Shared-memory buffers a program (64-token tiles, STAGES - 1 of them in flight): with 3, four
# programs fit an SM; 4 or 6 buffers ran no faster at any split count, even where fewer
# programs an SM leave room for them (benchmarks/probe_fp8_splits.py).
STAGES = 3
# Registers a thread at most: four programs of 128 threads fill an SM's 64K. Left free, ptxas
# took up to 166 for forms of this loop, which fits three, and 64 x 4096 ran 10% slower.
MAX_REGISTERS = 128
# Where a GPU runs it: cp.async and mma.sync with float16 operands (sm_80 on).
MIN_CAPABILITY = (8, 0)
# cp.async into shared memory: async_load in newer Triton (3.9), async_copy_global_to_shared
# in older (3.6).
_async_load = getattr(async_copy, "async_load", None) or async_copy.async_copy_global_to_shared
# A barrier of the program's threads: gl.barrier in newer Triton, gl.thread_barrier in older.
_barrier = getattr(gl, "barrier", None) or gl.thread_barrier


@functools.lru_cache(maxsize=None)
def _capable(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device) >= MIN_CAPABILITY


def supported(q: torch.Tensor, table: SegmentTable, window: int | None) -> bool:
    """Whether this kernel decodes these inputs: an fp8 cache on a capable GPU, blocks of whole
    runs of V, head_dim HEAD_DIM, at most MAX_GROUP query heads a KV head, no window."""
    return (q.device.type == "cuda" and is_fp8(table.dtype) and window is None
            and table.block_size % VALUE_RUN == 0 and table.head_dim == HEAD_DIM
            and q.shape[1] // table.num_kv_heads <= MAX_GROUP and _capable(q.device))


@gluon.jit
def _share_blocks(bt_row, tile, end, T: gl.constexpr, BLOCK_SIZE: gl.constexpr):
    """The block of each warp's share of the tile from `tile` (T tokens from tile + w * T, in
    one block: T is a run, and blocks hold whole runs from multiples of them), 0 for shares from
    end on; laid out for _copy_tile's K copy."""
    ck: gl.constexpr = gl.BlockedLayout([1, 1, 16], [1, 4, 8], [gl.num_warps(), 1, 1], [2, 1, 0])
    first = tile + gl.arange(0, gl.num_warps(), layout=gl.SliceLayout(1, gl.SliceLayout(2, ck))) * T
    return gl.load(bt_row + first // BLOCK_SIZE, mask=first < end, other=0)


@gluon.jit
def _share_rows(block, Offsets, first, BLOCK_SIZE: gl.constexpr,
                BLOCKS_PER_SEGMENT: gl.constexpr, TOKEN: gl.constexpr, ALIGN: gl.constexpr):
    """Element offset (KV head 0) of each warp's first token `first` of a tile, in `block`: its
    segment's offset, the block's place in the segment and the token's in the block, blocks of
    BLOCK_SIZE tokens of TOKEN elements. K and V^T alike: a run of V^T starts where its first
    token's K would."""
    seg = block // BLOCKS_PER_SEGMENT
    return (gl.load(Offsets + seg) * ALIGN
            + (block - seg * BLOCKS_PER_SEGMENT).to(gl.int64) * (BLOCK_SIZE * TOKEN)
            + (first % BLOCK_SIZE) * TOKEN)


@gluon.jit
def _copy_tile(k_buf, v_buf, block, K_base, V_base, K_offsets, V_offsets, kv_head, tile, end,
               T: gl.constexpr, NUM_KV_HEADS: gl.constexpr, BLOCK_SIZE: gl.constexpr,
               BLOCKS_PER_SEGMENT: gl.constexpr, ALIGN: gl.constexpr):
    """cp.async of the tile from `tile`, whose shares lie in `block` (_share_blocks): K as
    [warps, T, head_dim] and V^T as [warps, head_dim, T], warp w copying its own share, one run
    of V^T; nothing from end on (V a whole run or none: its copies stay 16 bytes); one commit
    group."""
    D: gl.constexpr = 128
    TOKEN: gl.constexpr = NUM_KV_HEADS * D
    gl.static_assert(T == 16)
    ck: gl.constexpr = gl.BlockedLayout([1, 1, 16], [1, 4, 8], [gl.num_warps(), 1, 1], [2, 1, 0])
    first = tile + gl.arange(0, gl.num_warps(), layout=gl.SliceLayout(1, gl.SliceLayout(2, ck))) * T
    t = gl.arange(0, T, layout=gl.SliceLayout(0, gl.SliceLayout(2, ck)))
    rows = (_share_rows(block, K_offsets, first, BLOCK_SIZE, BLOCKS_PER_SEGMENT, TOKEN,
                        ALIGN)[:, None] + t[None, :] * TOKEN)
    col = kv_head * D + gl.arange(0, D, layout=gl.SliceLayout(0, gl.SliceLayout(1, ck)))
    _async_load(k_buf, K_base + rows[:, :, None] + col[None, None, :],
                mask=(first[:, None] + t[None, :] < end)[:, :, None])
    cv: gl.constexpr = gl.BlockedLayout([1, 1, 16], [1, 32, 1], [gl.num_warps(), 1, 1], [2, 1, 0])
    share: gl.constexpr = gl.SliceLayout(1, gl.SliceLayout(2, cv))
    first_v = tile + gl.arange(0, gl.num_warps(), layout=share) * T
    run = _share_rows(gl.convert_layout(block, share), V_offsets, first_v, BLOCK_SIZE,
                      BLOCKS_PER_SEGMENT, TOKEN, ALIGN)
    d = kv_head * D + gl.arange(0, D, layout=gl.SliceLayout(0, gl.SliceLayout(2, cv)))
    tv = gl.arange(0, T, layout=gl.SliceLayout(0, gl.SliceLayout(1, cv)))
    v_ptrs = V_base + run[:, None, None] + d[None, :, None] * T + tv[None, None, :]
    v_ptrs = gl.max_contiguous(gl.multiple_of(v_ptrs, [1, 1, T]), [1, 1, T])
    _async_load(v_buf, v_ptrs, mask=(first_v < end)[:, None, None])
    async_copy.commit_group()


@gluon.jit
def _step(k_buf, v_buf, q_t, scale, m_i, l_i, acc, tile, end, T: gl.constexpr,
          MASKED: gl.constexpr):
    """One tile's online softmax (base 2) in every warp over its own T tokens. MASKED: the
    tile reaches past end, whose tokens get no weight and whose values (slots that may never
    have been written, and e4m3 garbage may be NaN) are zeroed."""
    G: gl.constexpr = 8
    mma: gl.constexpr = gl.NVMMADistributedLayout([2, 0], [gl.num_warps(), 1, 1], [1, 16, 8])
    a_op: gl.constexpr = gl.DotOperandLayout(0, mma, 4)
    b_op: gl.constexpr = gl.DotOperandLayout(1, mma, 4)
    k = k_buf.load(a_op).to(gl.float16)
    scores = mma_v2(k, q_t, gl.zeros([gl.num_warps(), T, G], gl.float32, mma)) * scale
    v_t = v_buf.load(a_op).to(gl.float16)
    if MASKED:
        w = gl.arange(0, gl.num_warps(), layout=gl.SliceLayout(1, gl.SliceLayout(2, mma)))
        t = gl.arange(0, T, layout=gl.SliceLayout(0, gl.SliceLayout(2, mma)))
        seen = (tile + w[:, None] * T + t[None, :] < end)[:, :, None]
        scores = gl.where(seen, scores, float("-inf"))
        wv = gl.arange(0, gl.num_warps(), layout=gl.SliceLayout(1, gl.SliceLayout(1, a_op)))
        tv = gl.arange(0, T, layout=gl.SliceLayout(0, gl.SliceLayout(1, a_op)))
        v_t = gl.where((tile + wv[:, None] * T + tv[None, :] < end)[:, None, :], v_t, 0.0)
    m_new = gl.maximum(m_i, gl.max(scores, axis=1))
    # A warp that has seen no token yet keeps -inf: its weights are taken from 0 (giving 0).
    m_ref = gl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = gl.exp2(m_i - m_ref)
    p = gl.exp2(scores - m_ref[:, None, :])
    l_i = l_i * alpha + gl.sum(p, axis=1)
    acc = mma_v2(v_t, gl.convert_layout(p.to(gl.float16), b_op), acc * alpha[:, None, :])
    return m_new, l_i, acc


@gluon.jit
def _tile(k_buf, v_buf, k_ahead, v_ahead, block, bt_row, K_base, V_base, K_offsets, V_offsets,
          kv_head, q_t, scale, m_i, l_i, acc, tile, end, T: gl.constexpr,
          NUM_KV_HEADS: gl.constexpr, BLOCK_SIZE: gl.constexpr, BLOCKS_PER_SEGMENT: gl.constexpr,
          ALIGN: gl.constexpr, STAGES: gl.constexpr, MASKED: gl.constexpr):
    """The tile from `tile`, in k_buf and v_buf: once its copies have landed, the copy of the
    tile STAGES - 1 on (in `block`) goes into k_ahead and v_ahead (the buffers of the tile
    before, which every warp is past), so that STAGES - 1 tiles are in flight during the step;
    the blocks of the tile after that are loaded for the next call, their latency hidden by
    this one."""
    BLOCK_N: gl.constexpr = gl.num_warps() * T
    async_copy.wait_group(STAGES - 2)
    _barrier()
    ahead = _share_blocks(bt_row, tile + STAGES * BLOCK_N, end, T, BLOCK_SIZE)
    _copy_tile(k_ahead, v_ahead, block, K_base, V_base, K_offsets, V_offsets, kv_head,
               tile + (STAGES - 1) * BLOCK_N, end, T, NUM_KV_HEADS, BLOCK_SIZE,
               BLOCKS_PER_SEGMENT, ALIGN)
    m_i, l_i, acc = _step(k_buf, v_buf, q_t, scale, m_i, l_i, acc, tile, end, T, MASKED)
    return m_i, l_i, acc, ahead


@gluon.jit
def _tiles(k_bufs, v_bufs, block, bt_row, K_base, V_base, K_offsets, V_offsets, kv_head, q_t,
           scale, m_i, l_i, acc, tile, end, T: gl.constexpr, NUM_KV_HEADS: gl.constexpr,
           BLOCK_SIZE: gl.constexpr, BLOCKS_PER_SEGMENT: gl.constexpr, ALIGN: gl.constexpr,
           STAGES: gl.constexpr, MASKED: gl.constexpr):
    """The STAGES tiles from `tile` (those that start before end), in the buffers in turn."""
    BLOCK_N: gl.constexpr = gl.num_warps() * T
    for s in gl.static_range(STAGES):
        if tile + s * BLOCK_N < end:
            m_i, l_i, acc, block = _tile(
                k_bufs[s], v_bufs[s], k_bufs[(s + STAGES - 1) % STAGES],
                v_bufs[(s + STAGES - 1) % STAGES], block, bt_row, K_base, V_base, K_offsets,
                V_offsets, kv_head, q_t, scale, m_i, l_i, acc, tile + s * BLOCK_N, end, T,
                NUM_KV_HEADS, BLOCK_SIZE, BLOCKS_PER_SEGMENT, ALIGN, STAGES, MASKED)
    return m_i, l_i, acc, block


@gluon.jit
def _fp8_decode_kernel(Q, K_base, V_base, K_offsets, V_offsets, K_scale, V_scale, Block_tables,
                       Context_lens, Out, Part_out, Part_lse, stride_qb, stride_qh, stride_bt,
                       stride_ob, stride_oh, stride_ks, stride_vs, qk_scale, num_splits,
                       GROUP: gl.constexpr, NUM_KV_HEADS: gl.constexpr, BLOCK_SIZE: gl.constexpr,
                       BLOCKS_PER_SEGMENT: gl.constexpr, ALIGN: gl.constexpr,
                       SPLIT: gl.constexpr, STAGES: gl.constexpr):
    D: gl.constexpr = 128
    G: gl.constexpr = 8
    T: gl.constexpr = 16
    W: gl.constexpr = gl.num_warps()
    BLOCK_N: gl.constexpr = W * T
    mma: gl.constexpr = gl.NVMMADistributedLayout([2, 0], [gl.num_warps(), 1, 1], [1, 16, 8])
    b_op: gl.constexpr = gl.DotOperandLayout(1, mma, 4)
    k_shared: gl.constexpr = gl.SwizzledSharedLayout(16, 1, 8, [2, 1, 0])
    v_shared: gl.constexpr = gl.SwizzledSharedLayout(16, 128 // T, T // 16, [2, 1, 0])
    b = gl.program_id(0)
    kv_head = gl.program_id(1)
    split = gl.program_id(2)
    context = gl.load(Context_lens + b)
    split_tokens = gl.cdiv(gl.cdiv(context, num_splits), BLOCK_N) * BLOCK_N
    start = split * split_tokens
    end = gl.minimum(start + split_tokens, context)
    span = gl.maximum(end - start, 0)
    bt_row = Block_tables + b.to(gl.int64) * stride_bt

    wq = gl.arange(0, gl.num_warps(), layout=gl.SliceLayout(1, gl.SliceLayout(2, b_op)))
    d_q = gl.arange(0, D, layout=gl.SliceLayout(0, gl.SliceLayout(2, b_op)))
    g_q = gl.arange(0, G, layout=gl.SliceLayout(0, gl.SliceLayout(1, b_op)))
    q_t = gl.load(Q + b * stride_qb + wq[:, None, None] * 0 + d_q[None, :, None]
                  + (kv_head * GROUP + g_q)[None, None, :] * stride_qh,
                  mask=(g_q < GROUP)[None, None, :], other=0.0)
    # Saturated at float16's range rather than overflowing (queries never come near it).
    q_t = gl.minimum(gl.maximum(q_t.to(gl.float32), -65504.0), 65504.0).to(gl.float16)
    scale = qk_scale * gl.load(K_scale + kv_head * stride_ks)

    # STAGES buffers of each, separate allocations (one barrier a tile, not two).
    k_bufs = ()
    v_bufs = ()
    for s in gl.static_range(STAGES):
        k_bufs = k_bufs + (gl.allocate_shared_memory(gl.float8e4nv, [W, T, D], k_shared),)
    for s in gl.static_range(STAGES):
        v_bufs = v_bufs + (gl.allocate_shared_memory(gl.float8e4nv, [W, D, T], v_shared),)
    for s in gl.static_range(STAGES - 1):
        _copy_tile(k_bufs[s], v_bufs[s],
                   _share_blocks(bt_row, start + s * BLOCK_N, end, T, BLOCK_SIZE), K_base,
                   V_base, K_offsets, V_offsets, kv_head, start + s * BLOCK_N, end, T,
                   NUM_KV_HEADS, BLOCK_SIZE, BLOCKS_PER_SEGMENT, ALIGN)
    block = _share_blocks(bt_row, start + (STAGES - 1) * BLOCK_N, end, T, BLOCK_SIZE)
    m_i = gl.full([W, G], float("-inf"), gl.float32, gl.SliceLayout(1, mma))
    l_i = gl.zeros([W, G], gl.float32, gl.SliceLayout(1, mma))
    acc = gl.zeros([W, D, G], gl.float32, mma)
    # Whole tiles STAGES at a time, then the last STAGES - 1 whole tiles at most and the
    # partial one, masked.
    groups = span // (STAGES * BLOCK_N)
    for i in range(groups):
        m_i, l_i, acc, block = _tiles(k_bufs, v_bufs, block, bt_row, K_base, V_base, K_offsets,
                                      V_offsets, kv_head, q_t, scale, m_i, l_i, acc,
                                      start + i * (STAGES * BLOCK_N), end, T, NUM_KV_HEADS,
                                      BLOCK_SIZE, BLOCKS_PER_SEGMENT, ALIGN, STAGES, False)
    m_i, l_i, acc, block = _tiles(k_bufs, v_bufs, block, bt_row, K_base, V_base, K_offsets,
                                  V_offsets, kv_head, q_t, scale, m_i, l_i, acc,
                                  start + groups * (STAGES * BLOCK_N), end, T, NUM_KV_HEADS,
                                  BLOCK_SIZE, BLOCKS_PER_SEGMENT, ALIGN, STAGES, True)
    async_copy.wait_group(0)

    # The warps' shares merged: weights rescaled to the largest maximum (0 where none saw a
    # key, a split past the context or an empty row).
    m = gl.max(m_i, axis=0)
    f = gl.exp2(m_i - gl.where(m > float("-inf"), m, 0.0)[None, :])
    total = gl.sum(l_i * f, axis=0)
    out = gl.sum(acc * f[:, None, :], axis=0)
    ol: gl.constexpr = gl.SliceLayout(0, mma)
    norm = gl.convert_layout(gl.where(total > 0, total, 1.0), gl.SliceLayout(0, ol))
    out = out / norm[None, :] * gl.load(V_scale + kv_head * stride_vs)
    d_o = gl.arange(0, D, layout=gl.SliceLayout(1, ol))
    g_o = gl.arange(0, G, layout=gl.SliceLayout(0, ol))
    heads = kv_head * GROUP + g_o
    if SPLIT:
        part = (b * (NUM_KV_HEADS * GROUP) + heads) * num_splits + split
        gl.store(Part_out + part[None, :] * D + d_o[:, None], out, mask=(g_o < GROUP)[None, :])
        g_l = gl.arange(0, G, layout=gl.SliceLayout(0, gl.SliceLayout(1, mma)))
        lse = gl.where(total > 0, m + gl.log2(gl.where(total > 0, total, 1.0)), float("-inf"))
        gl.store(Part_lse + (b * (NUM_KV_HEADS * GROUP) + kv_head * GROUP + g_l) * num_splits
                 + split, lse, mask=g_l < GROUP)
    else:
        gl.store(Out + b * stride_ob + heads[None, :] * stride_oh + d_o[:, None],
                 out.to(Out.dtype.element_ty), mask=(g_o < GROUP)[None, :])


@dataclass(frozen=True)
class Launch:
    """The kernel launch for one input shape: its split count, the partial results' buffers
    and the reduce kernel of a split launch (None unsplit)."""

    num_splits: int
    kernel: DirectLaunch
    partials: tuple[torch.Tensor, torch.Tensor] | None
    reduce: DirectLaunch | None

    def __call__(self, q, table: SegmentTable, block_tables, context_lens, k_scale, v_scale,
                 out, stride_ks: int, stride_vs: int, qk_scale: float) -> None:
        batch, num_heads, _ = q.shape
        part_out, part_lse = self.partials or (out, out)
        self.kernel((batch, table.num_kv_heads, self.num_splits), q, table.k_base, table.v_base,
                    table.k_offsets, table.v_offsets, k_scale, v_scale, block_tables,
                    context_lens, out, part_out, part_lse, q.stride(0), q.stride(1),
                    block_tables.stride(0), out.stride(0), out.stride(1), stride_ks, stride_vs,
                    qk_scale, self.num_splits)
        if self.reduce is not None:
            self.reduce((batch, num_heads, 1), part_out, part_lse, out, out.stride(0),
                        out.stride(1), self.num_splits, context_lens, 0)


_LAUNCHES: dict[tuple, Launch] = {}
MAX_CACHED_LAUNCHES = 4096


def launch_for(key: tuple, q: torch.Tensor, table: SegmentTable, block_tables: torch.Tensor,
               num_splits: int | None, check: Callable[[], None]) -> Launch:
    """The Launch for the inputs that key describes (paged_decode.launch_key; check() runs when
    a key is first seen). The split count defaults to choose_fp8_num_splits' at this
    kernel's occupancy; it never reads context lengths on the host, so the launch can be
    captured in a CUDA graph."""
    launch = _LAUNCHES.get(key)
    if launch is None:
        check()
        batch, num_heads, _ = q.shape
        constexprs = dict(GROUP=num_heads // table.num_kv_heads, NUM_KV_HEADS=table.num_kv_heads,
                          BLOCK_SIZE=table.block_size,
                          BLOCKS_PER_SEGMENT=table.blocks_per_segment,
                          ALIGN=ALIGN_BYTES // table.dtype.itemsize, STAGES=STAGES)
        options = dict(num_warps=WARPS, maxnreg=MAX_REGISTERS)
        if num_splits is None:
            per_sm = _programs_per_sm(q.device, q.dtype, table.dtype, q.stride()[:2],
                                      block_tables.stride(0), tuple(sorted(constexprs.items())),
                                      tuple(sorted(options.items())))
            num_splits = choose_fp8_num_splits(batch, table.num_kv_heads,
                                               block_tables.shape[1] * table.block_size,
                                               occupancy.num_sms(q.device), per_sm)
        split = num_splits > 1
        if len(_LAUNCHES) >= MAX_CACHED_LAUNCHES:
            _LAUNCHES.clear()
        launch = _LAUNCHES[key] = Launch(
            num_splits, DirectLaunch(_fp8_decode_kernel, dict(constexprs, SPLIT=split), options),
            decode_partials(q.device, batch, num_heads, HEAD_DIM, num_splits) if split else None,
            reduce_launch(num_heads, HEAD_DIM, num_splits, False, False, limit_rows=False)
            if split else None)
    return launch


@functools.lru_cache(maxsize=64)
def _programs_per_sm(device: torch.device, q_dtype: torch.dtype, cache_dtype: torch.dtype,
                     q_strides: tuple[int, int], table_stride: int, constexprs: tuple,
                     options: tuple) -> int:
    """Programs of this kernel an SM holds (kernels/occupancy.py), read off a compile of it."""
    signature = (q_dtype, cache_dtype, cache_dtype, torch.int64, torch.int64, torch.float32,
                 torch.float32, torch.int32, torch.int32, q_dtype, torch.float32, torch.float32,
                 *q_strides, table_stride, *q_strides, 1, 1, 1.0, 2)
    return occupancy.programs_per_sm(_fp8_decode_kernel, device, signature,
                                     tuple(sorted(dict(constexprs, SPLIT=True).items())),
                                     options)
