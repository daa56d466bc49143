"""Balanced paged decode: a fixed grid of programs walks a work list that shares a step's keys
out evenly, whatever the mix of context lengths.

paged_decode cuts every sequence of a launch into the same number of splits, chosen from shapes
alone (a launch captured in a CUDA graph must not read context lengths on the host): one long
sequence among short ones then streams in its few programs while the rest of the GPU idles, and
splits sized for it would cut the short ones into slivers. Here the host, which knows every
context length when it stages a step, builds a work list per step (kernels/work_list.py): each
program gets an equal run of key tiles, cut where rows begin and end. The grid is fixed,
(programs, num_kv_heads) with `programs` per KV head such that the GPU holds them all at once
(one persistent wave), and so are the list's and the scratch's shapes (bounded by the row
count): a CUDA graph captures the launch once and replays it with each step's list.

A program walks its items in order; an item is keys start .. end - 1 of one row: attend_keys
(kernels/tl_helpers.py), as in paged_decode, then the output itself where the row has only
that item, else a partial output and its log-sum-exp, which the varlen reduce of
kernels/split_kv.py combines per row (a row without keys gets zeros there). A sliding window
needs nothing in the kernel: the list holds only the window's keys. KV cache layout, fp8 scales
and the bfloat16 emulation of the interpreter are paged_decode's.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import triton
import triton.language as tl

from kernels import occupancy
from kernels.fp8 import check_scales, is_fp8
from kernels.launch import DirectLaunch
from kernels.decode_launch import DecodeConfig, default_config
from kernels.paged_decode import (LOG2E, DecodeShape, check_inputs, decode_output,
                                  shape_constants)
from kernels.segments import KVLayoutError, SegmentTable, segment_table
from kernels.split_kv import partials, reduce_launch, use_pdl
from kernels.tl_helpers import (attend_keys, load_query, log_sum_exp, normalise,
                                round_to_bf16)
from kernels.work_list import DecodeWorkList, WorkListPlan


@triton.jit(do_not_specialize=["rows"])
def _balanced_kernel(
    Q, K_base, V_base, K_offsets, V_offsets, K_scale, V_scale, Block_tables, Work, Out,
    Part_out, Part_lse, stride_qb, stride_qh, stride_bt, stride_ob, stride_oh, stride_ks,
    stride_vs, qk_scale, rows, max_items,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCKS_PER_SEGMENT: tl.constexpr,
    BLOCK_N: tl.constexpr, ALIGN: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    EMULATE_BF16: tl.constexpr, USE_PDL: tl.constexpr, KV_FP8: tl.constexpr,
    DOT_FP16: tl.constexpr,
):
    if USE_PDL:
        # The reduce kernel may be scheduled now; its programs wait in gdc_wait for this grid.
        tl.extra.cuda.gdc_launch_dependents()
    program = tl.program_id(0)
    kv_head = tl.program_id(1)
    first = tl.load(Work + rows + 1 + program)
    last = tl.load(Work + rows + 2 + program)
    items = Work + rows + tl.num_programs(0) + 2

    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, HEAD_DIM)
    heads = kv_head * GROUP + g
    head_col = kv_head * HEAD_DIM + d
    row_mask = (g < GROUP)[:, None]
    if KV_FP8:
        qk_scale = qk_scale * tl.load(K_scale + kv_head * stride_ks)
        v_scale = tl.load(V_scale + kv_head * stride_vs)
    for item in range(first, last):
        row = tl.load(items + 3 * item)
        start = tl.load(items + 3 * item + 1)
        end = tl.load(items + 3 * item + 2)
        q = load_query(Q, row, stride_qb, stride_qh, heads, g, d, GROUP, DOT_FP16, EMULATE_BF16)
        # Tiles from the one `start` falls in; keys before it are masked (a window's first).
        acc, m_i, l_i = attend_keys(q, Block_tables + row.to(tl.int64) * stride_bt, K_base,
                                    V_base, K_offsets, V_offsets, head_col, qk_scale,
                                    start // BLOCK_N * BLOCK_N, start, end, BLOCK_G, HEAD_DIM,
                                    NUM_KV_HEADS, BLOCK_SIZE, BLOCKS_PER_SEGMENT, BLOCK_N,
                                    ALIGN, INPUT_PRECISION, EMULATE_BF16, DOT_FP16, True,
                                    KV_FP8)
        if KV_FP8:
            acc = acc * v_scale
        out = normalise(acc, l_i)
        if tl.load(Work + row + 1) - tl.load(Work + row) == 1:
            if EMULATE_BF16:
                out = round_to_bf16(out)
            tl.store(Out + row * stride_ob + heads[:, None] * stride_oh + d[None, :],
                     out.to(Out.dtype.element_ty), mask=row_mask)
        else:
            part = heads * max_items + item
            tl.store(Part_out + part[:, None] * HEAD_DIM + d[None, :], out, mask=row_mask)
            tl.store(Part_lse + part, log_sum_exp(m_i, l_i), mask=g < GROUP)


def launch_config(block_size: int) -> DecodeConfig:
    """The kernel's launch shape: paged_decode's for an unsplit launch (an item is a run of
    whole tiles, as an unsplit sequence is)."""
    return default_config(block_size, 1)


def _constants(shape: DecodeShape) -> dict:
    consts = shape_constants(shape)
    del consts["HAS_WINDOW"]  # the work list holds only the window's keys
    return dict(consts, BLOCK_N=launch_config(shape.block_size).block_n,
                USE_PDL=use_pdl(shape.device))


@functools.lru_cache(maxsize=None)
def plan_work_lists(shape: DecodeShape, programs: int | None = None) -> WorkListPlan:
    """The work lists of decode over queries and a cache of this shape (its batch and block
    tables aside): `programs` per KV head, by default as many as the GPU holds at once (the
    SM count times the compiled kernel's occupancy, shared out over the KV heads); one on a
    CPU, whose interpreter runs one program at a time."""
    config = launch_config(shape.block_size)
    if programs is None:
        per_sm = 1
        if shape.device.type == "cuda":
            cache, dtype = shape.cache_dtype, shape.dtype
            scale = torch.float32 if is_fp8(cache) else dtype
            signature = (dtype, cache, cache, torch.int64, torch.int64, scale, scale, torch.int32,
                         torch.int32, dtype, torch.float32, torch.float32, *shape.q_strides,
                         shape.table_stride, *shape.q_strides, 0, 0, 1.0, 2, 16)
            per_sm = occupancy.programs_per_sm(
                _balanced_kernel, shape.device, signature,
                tuple(sorted(_constants(shape).items())),
                tuple(sorted(config.options().items())))
        programs = max(1, occupancy.num_sms(shape.device) * per_sm // shape.num_kv_heads)
    return WorkListPlan(programs, config.block_n, shape.window)


def paged_decode_balanced(
    q: torch.Tensor,
    k_segments: Sequence[torch.Tensor | None] | None,
    v_segments: Sequence[torch.Tensor | None] | None,
    block_tables: torch.Tensor,
    work: DecodeWorkList,
    blocks_per_segment: int,
    scale: float | None = None,
    *,
    table: SegmentTable | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """paged_decode's attention (same inputs, scales, out= and result) over the keys a work
    list gives each row: a list that plan_work_lists' plan built from the rows' context lengths
    (and window), on q's device. Reads no context length and no tensor data on the host: the
    launch can be captured in a CUDA graph and replayed with new lists in the same tensor."""
    table = segment_table(k_segments, v_segments) if table is None else table
    launch = _launch_for(q, table, block_tables, work, blocks_per_segment)
    stride_ks, stride_vs = check_scales(table.dtype, k_scale, v_scale, table.num_kv_heads,
                                        q.device)
    out = decode_output(q, out)
    num_heads, head_dim = q.shape[1:]
    max_items = work.max_items
    part_out, part_lse = partials(out, 1, max_items)  # one row whose splits are the items
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    fp8 = launch.kernel.constexprs["KV_FP8"]  # without fp8 the scale pointers are never read
    launch.kernel(
        (work.plan.programs, table.num_kv_heads, 1),
        q, table.k_base, table.v_base, table.k_offsets, table.v_offsets,
        k_scale if fp8 else q, v_scale if fp8 else q, block_tables, work.data, out, part_out,
        part_lse, q.stride(0), q.stride(1), block_tables.stride(0), out.stride(0), out.stride(1),
        stride_ks, stride_vs, scale * LOG2E, work.rows, max_items,
    )
    launch.reduce((work.rows, num_heads, 1), part_out, part_lse, out, out.stride(0),
                  out.stride(1), max_items, work.data, 0)
    return out


@dataclass(frozen=True)
class _Launch:
    kernel: DirectLaunch
    reduce: DirectLaunch


# Launches by the shapes, strides, dtypes and devices of the inputs, as paged_decode keeps its.
_LAUNCHES: dict[tuple, _Launch] = {}
MAX_CACHED_LAUNCHES = 4096


def _launch_for(q, table, block_tables, work, blocks_per_segment) -> _Launch:
    key = (q.shape, q.stride(), q.dtype, q.device, table.dtype, table.num_kv_heads,
           table.head_dim, table.block_size, table.blocks_per_segment,
           table.k_base.element_size(), block_tables.shape, block_tables.stride(),
           block_tables.dtype, blocks_per_segment, work.plan, work.rows, work.data.shape,
           work.data.dtype, work.data.device)
    launch = _LAUNCHES.get(key)
    if launch is None:
        check_inputs(q, table, block_tables, blocks_per_segment)
        data = work.data
        if (work.rows != q.shape[0] or data.dtype != torch.int32 or data.device != q.device
                or data.dim() != 1 or data.numel() < work.plan.size(work.rows)):
            raise KVLayoutError(f"work list: {work.rows} rows, {data.dtype} "
                                f"{tuple(data.shape)} on {data.device}; q needs one of "
                                f"{q.shape[0]} rows, int32 [{work.plan.size(q.shape[0])}] on "
                                f"{q.device}")
        consts = _constants(DecodeShape.of(q, table, block_tables))
        config = launch_config(table.block_size)
        kernel = DirectLaunch(_balanced_kernel, consts, config.options())
        reduce = reduce_launch(q.shape[1], q.shape[2], work.max_items, consts["EMULATE_BF16"],
                               consts["USE_PDL"], limit_rows=False, varlen=True)
        if len(_LAUNCHES) >= MAX_CACHED_LAUNCHES:
            _LAUNCHES.clear()
        launch = _LAUNCHES[key] = _Launch(kernel, reduce)
    return launch
