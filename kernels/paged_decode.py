"""Paged decode attention in Triton: one query token per sequence over KV spread in segments.

Cache layout: segment s is a contiguous tensor [blocks_per_segment, block_size, num_kv_heads,
head_dim] (token-major, as vLLM's flash layout) holding global blocks s * blocks_per_segment ...
Token-major keeps one token's K (or V) for all heads in one run of memory, so writing a new
token is one contiguous store and every block_size, 1 included, is the same memory viewed
differently; a program reads one head's 2 * head_dim bytes per token, whole 128-byte lines at
head_dim 64 and up. Measured on an H100 (benchmarks/results/paged_decode_h100.md) it streams
at 96-100% of SDPA on a contiguous heads-major cache at block_size 1, 64 and 256.

Segments: the kernel addresses segment s through a SegmentTable (kernels/segments.py) of
16-byte-aligned offsets from one base tensor per K and V.

FP8 KV (kernels/fp8.py): on a GPU, paged_decode hands an fp8 cache to kernels/fp8_decode.py's
Gluon kernel wherever that applies (fp8_decode.supported: blocks of whole runs of V, head_dim
128, at most 8 query heads a KV head, no window, no launch config given); this kernel decodes
every other fp8 case, and every case on the CPU. Here a float8 e4m3 cache is loaded as it is
stored, half the bytes of bfloat16, and converted to the dots' dtype, which holds every e4m3
value exactly: float16 under a bfloat16 or float16 q, since the GPU converts e4m3 to float16 in
one instruction per pair of values but to bfloat16 only through float16, a second conversion per
value that made the fp8 kernel no faster than the bf16 one (an earlier table, in the git history
of benchmarks/results/paged_decode_fp8_h200.csv). A bfloat16 q is converted to float16 once per
program, exactly within float16's range and saturated outside +-65504, far beyond what attention
queries hold; the probabilities go to the PV dot in float16 too. The scales are applied once per
program (a program serves one KV head, and a scale is per tensor or per KV head): K's into the
score scale, V's into the output. That equals multiplying every loaded element by its scale,
with no rounding of the products before the dot. An fp8 cache holds V transposed in runs of 16
tokens (kernels/segments.py), so the P.V dot's operand is read with its tokens adjacent
(tl_helpers.load_values_transposed); the loop still converts every element and needs more
registers than bf16, and kernels/decode_launch.py caps them so that 4 programs fit an SM
(benchmarks/results/tuning/paged_decode_fp8_tune_transposed_v_h200.csv). Hopper multiplies e4m3
only in wgmma, whose tiles have 64 rows and more: both dots there, the operands swapped so that
a tile's tokens are the rows and the queries and weights quantized to e4m3
(benchmarks/probe_fp8_tensor_cores.py), ran at 0.28-1.36x bf16's speed where this kernel runs at
1.54-1.96x, and lost its exactness (3.6-3.8e-2 relative error against the dequantized cache,
against 1.7e-3), so the dots stay in float16.

Algorithm (flash-decoding): grid (batch, kv_head, split). A program loads the query heads that
share its KV head (GQA) as one tile, streams its slice of the context in tiles of BLOCK_N
tokens with an online softmax in base 2, and writes either the output (one split) or a
normalised partial output and its log-sum-exp. The last split of a row and KV head to finish
combines them into the output in the same launch (kernels/split_kv.py: last_split counts the
finished splits, combine_splits weighs them), so a split call is one launch, not a split
kernel and a reduce kernel. A block that holds whole tiles costs one table lookup per tile;
smaller blocks are looked up per token.
With a sliding window the splits share out only the last `window` keys (from the tile they
start in): blocks before it are never loaded, nor are their block-table entries read.

kernels/balanced_decode.py runs the same attention over a work list the host builds per step,
which shares the keys out evenly over a fixed grid whatever the mix of context lengths.

Launch heuristics (kernels/decode_launch.py) size the grid in waves: a wave is as many programs
as the GPU holds at once, read off the compiled kernel's registers and shared memory.
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
from kernels.decode_launch import TILE_TOKENS, DecodeConfig, choose_num_splits, default_config
from kernels.fp8 import check_query_dtype, check_scales, is_fp8
from kernels.launch import DirectLaunch
from kernels.segments import ALIGN_BYTES, KVLayoutError, SegmentTable, segment_table
from kernels.split_kv import combine_splits, decode_partials, last_split, split_counters
from kernels.tl_helpers import (attend_keys, load_query, log_sum_exp, normalise,
                                 round_to_bf16)

try:
    from kernels import fp8_decode
except (ImportError, AttributeError):  # a Triton without the Gluon layer, or without the parts
    fp8_decode = None                  # kernels/fp8_decode.py calls: this kernel decodes fp8 too

LOG2E = 1.4426950408889634


@triton.jit(do_not_specialize=["window"])
def _decode_split_kernel(
    Q, K_base, V_base, K_offsets, V_offsets, K_scale, V_scale, Block_tables, Context_lens, Out,
    Part_out, Part_lse, Counters, stride_qb, stride_qh, stride_bt, stride_ob, stride_oh, stride_ks,
    stride_vs, qk_scale, num_splits, window,
    SPLIT: tl.constexpr, GROUP: tl.constexpr, BLOCK_G: tl.constexpr, COMBINE_ROWS: tl.constexpr,
    HEAD_DIM: tl.constexpr, NUM_KV_HEADS: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCKS_PER_SEGMENT: tl.constexpr, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, EMULATE_BF16: tl.constexpr, KV_FP8: tl.constexpr,
    DOT_FP16: tl.constexpr, HAS_WINDOW: tl.constexpr,
):
    b = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)

    context = tl.load(Context_lens + b)
    if HAS_WINDOW:
        # The query at position context - 1 reads keys from lo on; the splits share out the
        # tiles from the one lo falls in.
        lo = tl.maximum(context - window, 0)
        first = lo // BLOCK_N * BLOCK_N
    else:
        lo = 0
        first = 0
    split_tokens = tl.cdiv(tl.cdiv(context - first, num_splits), BLOCK_N) * BLOCK_N
    start = first + split * split_tokens
    end = tl.minimum(start + split_tokens, context)

    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, HEAD_DIM)
    heads = kv_head * GROUP + g
    q = load_query(Q, b, stride_qb, stride_qh, heads, g, d, GROUP, DOT_FP16, EMULATE_BF16)
    bt_row = Block_tables + b.to(tl.int64) * stride_bt
    head_col = kv_head * HEAD_DIM + d
    if KV_FP8:
        qk_scale = qk_scale * tl.load(K_scale + kv_head * stride_ks)
    acc, m_i, l_i = attend_keys(q, bt_row, K_base, V_base, K_offsets, V_offsets, head_col,
                                qk_scale, start, lo, end, BLOCK_G, HEAD_DIM, NUM_KV_HEADS,
                                BLOCK_SIZE, BLOCKS_PER_SEGMENT, BLOCK_N, ALIGN, INPUT_PRECISION,
                                EMULATE_BF16, DOT_FP16, HAS_WINDOW, KV_FP8)
    if KV_FP8:
        acc = acc * tl.load(V_scale + kv_head * stride_vs)
    out = normalise(acc, l_i)
    if SPLIT:
        rows = b * NUM_KV_HEADS * GROUP + heads
        part = rows * num_splits + split
        tl.store(Part_out + part[:, None] * HEAD_DIM + d[None, :], out, mask=(g < GROUP)[:, None])
        tl.store(Part_lse + part, log_sum_exp(m_i, l_i), mask=g < GROUP)
        if last_split(Counters, b * NUM_KV_HEADS + kv_head, num_splits):
            # The combine reads no padding rows: COMBINE_ROWS, not BLOCK_G, of them.
            c = tl.arange(0, COMBINE_ROWS)
            group_heads = kv_head * GROUP + c
            combined = combine_splits(Part_out, Part_lse, b * NUM_KV_HEADS * GROUP + group_heads,
                                      c < GROUP, num_splits, COMBINE_ROWS,
                                      BLOCK_G // COMBINE_ROWS, HEAD_DIM)
            _store_heads(Out + b * stride_ob, stride_oh, group_heads, c < GROUP, d, combined,
                         EMULATE_BF16)
    else:
        _store_heads(Out + b * stride_ob, stride_oh, heads, g < GROUP, d, out, EMULATE_BF16)


@triton.jit
def _store_heads(Out_row, stride_oh, heads, head_mask, d, out, EMULATE_BF16: tl.constexpr):
    """Writes the float32 outputs `out` of query heads `heads` (where head_mask) of one row."""
    if EMULATE_BF16:
        out = round_to_bf16(out)
    tl.store(Out_row + heads[:, None] * stride_oh + d[None, :], out.to(Out_row.dtype.element_ty),
             mask=head_mask[:, None])


@dataclass(frozen=True)
class LaunchPlan:
    """Split count, launch shape and compile-time constants of one paged_decode launch."""

    num_splits: int
    config: DecodeConfig
    constexprs: dict


@dataclass(frozen=True)
class DecodeShape:
    """Everything plan_launch reads off its inputs: shapes, strides, dtypes and the device. A
    hashable key, so that a plan is computed once per shape and reused."""

    batch: int
    num_heads: int
    head_dim: int
    q_strides: tuple[int, int]
    dtype: torch.dtype
    device: torch.device
    num_kv_heads: int
    block_size: int
    blocks_per_segment: int
    cache_dtype: torch.dtype
    table_width: int
    table_stride: int
    window: int | None = None

    @classmethod
    def of(cls, q: torch.Tensor, table: SegmentTable, block_tables: torch.Tensor,
           window: int | None = None) -> DecodeShape:
        return cls(q.shape[0], q.shape[1], q.shape[2], (q.stride(0), q.stride(1)), q.dtype,
                   q.device, table.num_kv_heads, table.block_size, table.blocks_per_segment,
                   table.dtype, block_tables.shape[1], block_tables.stride(0), window)

    @property
    def max_keys(self) -> int:
        return max_keys(self.table_width * self.block_size, self.window)


def max_keys(span: int, window: int | None) -> int:
    """The most keys one query's splits share out, for block tables that span `span` tokens:
    the span, or the window's keys and the part of a tile before them."""
    return span if window is None else min(span, window + TILE_TOKENS)


def plan_launch(q: torch.Tensor, table: SegmentTable, block_tables: torch.Tensor,
                num_splits: int | None = None, config: DecodeConfig | None = None,
                window: int | None = None) -> LaunchPlan:
    """What paged_decode launches for these shapes: the given split count and config, or the
    defaults (choose_num_splits with the occupancy of the compiled kernels, default_config).
    Reads no tensor data; the plan is cached per DecodeShape, since choosing the split count
    takes far longer on the host than a small decode kernel runs. The returned plan is shared:
    do not change its constexprs."""
    check_query_dtype(q.dtype, table.dtype)
    return plan_for_shape(DecodeShape.of(q, table, block_tables, window), num_splits, config)


def shape_constants(shape: DecodeShape) -> dict:
    """The compile-time constants a decode kernel takes from its input shapes and dtypes
    (kernels/tl_helpers.py's attend_keys and load_query read them)."""
    dtype = shape.dtype
    group = shape.num_heads // shape.num_kv_heads
    # The Triton interpreter (the only way CPU tensors run) multiplies bfloat16 bit patterns in
    # tl.dot (triton-lang/triton#11584) and truncates float32 -> bfloat16: there bfloat16 goes
    # through float32 with explicit round-to-nearest-even, the arithmetic of the GPU path.
    return dict(
        GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)), HEAD_DIM=shape.head_dim,
        NUM_KV_HEADS=shape.num_kv_heads, BLOCK_SIZE=shape.block_size,
        BLOCKS_PER_SEGMENT=shape.blocks_per_segment,
        ALIGN=ALIGN_BYTES // shape.cache_dtype.itemsize,
        INPUT_PRECISION="ieee" if dtype == torch.float32 else None,
        EMULATE_BF16=shape.device.type == "cpu" and dtype == torch.bfloat16,
        KV_FP8=is_fp8(shape.cache_dtype),
        DOT_FP16=is_fp8(shape.cache_dtype) and dtype == torch.bfloat16,
        HAS_WINDOW=shape.window is not None,
    )


@functools.lru_cache(maxsize=4096)
def plan_for_shape(shape: DecodeShape, num_splits: int | None = None,
                   config: DecodeConfig | None = None) -> LaunchPlan:
    """plan_launch's work for one shape (plan_for_shape.__wrapped__ is the uncached form)."""
    device, dtype = shape.device, shape.dtype
    max_context = shape.max_keys
    common = shape_constants(shape)

    def plan(splits: int) -> LaunchPlan:
        chosen = config or default_config(shape.block_size, splits, max_context,
                                          is_fp8(shape.cache_dtype))
        return LaunchPlan(splits, chosen,
                          dict(common, SPLIT=splits > 1, BLOCK_N=chosen.block_n,
                               COMBINE_ROWS=triton.next_power_of_2(common["GROUP"])))

    known: dict[tuple, int] = {}

    def programs_per_sm(splits: int) -> int:
        if device.type != "cuda":
            return 1
        candidate = plan(splits)
        key = (candidate.config, splits > 1)
        if key not in known:
            partial = torch.float32 if splits > 1 else dtype
            q_strides = shape.q_strides
            cache = shape.cache_dtype
            scale = torch.float32 if is_fp8(cache) else dtype
            signature = (dtype, cache, cache, torch.int64, torch.int64, scale, scale, torch.int32,
                         torch.int32, dtype, partial, partial, torch.int32, *q_strides,
                         shape.table_stride, *q_strides, 0, 0, 1.0, min(splits, 2),
                         shape.window or 0)
            known[key] = occupancy.programs_per_sm(
                _decode_split_kernel, device, signature,
                tuple(sorted(candidate.constexprs.items())),
                tuple(sorted(candidate.config.options().items())))
        return known[key]

    if num_splits is None:
        num_splits = choose_num_splits(shape.batch, shape.num_kv_heads, max_context,
                                       occupancy.num_sms(device), block_size=shape.block_size,
                                       programs_per_sm=programs_per_sm)
    return plan(num_splits)


def paged_decode(
    q: torch.Tensor,
    k_segments: Sequence[torch.Tensor | None] | None,
    v_segments: Sequence[torch.Tensor | None] | None,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    blocks_per_segment: int,
    scale: float | None = None,
    num_splits: int | None = None,
    *,
    table: SegmentTable | None = None,
    config: DecodeConfig | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Attention of one query token per sequence over its paged KV: out [B, Hq, D] in q's dtype.

    q [B, Hq, D]; block_tables [B, max_blocks] int32 of global block ids; context_lens [B]
    int32 (a length of 0 gives zeros). Pass `table` (then the segment lists may be None) to
    skip rebuilding the segment table on every call. num_splits defaults to plan_launch's choice
    from the batch, the block-table capacity, the SM count and the compiled kernels' occupancy;
    it never reads context_lens on the host, so the launch needs no synchronisation and can be
    captured in a CUDA graph (capture it: even with the launch cached per input shape, the
    Triton launch takes the host longer than a small decode takes the device). A split launch
    counts its finished splits in kernels.split_kv.split_counters' buffer and writes its partial
    results to decode_partials', both shared by every launch on the device: two calls must not
    run at the same time on one device (see there).

    A float8_e4m3fn cache (written by kernels.kv_write.write_kv with the same scales) needs
    k_scale and v_scale, float32 [1] or [Hkv] (kernels/fp8.py), and q in bfloat16, float16 or
    float32; any other cache needs q in its own dtype and takes no scales.

    out: where to write instead of a new tensor, [B, Hq, D] in q's dtype with a contiguous last
    dimension (a row slice of a larger output is fine).

    Host time per call is kept small (the launch is planned once per input shape and the
    compiled kernels are launched directly, kernels/launch.py); the checks of the inputs run
    when a shape is first seen.

    window: a sliding window of that many keys (the query, at position context - 1, reads
    keys context - window .. context - 1); the block-table entries of blocks wholly before
    it are never read, so they may hold anything (an allocator let those blocks go).
    """
    table = segment_table(k_segments, v_segments) if table is None else table
    stride_ks, stride_vs = check_scales(table.dtype, k_scale, v_scale, table.num_kv_heads,
                                        q.device)
    batch, _, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    if config is None and fp8_decode is not None and fp8_decode.supported(q, table, window):
        out = decode_output(q, out)
        fp8_decode.launch_for(
            launch_key(q, table, block_tables, context_lens, blocks_per_segment, num_splits,
                       config, window), q, table, block_tables, num_splits,
            lambda: check_launch(q, table, block_tables, context_lens, blocks_per_segment, window),
        )(q, table, block_tables, context_lens, k_scale, v_scale, out, stride_ks, stride_vs,
          scale * LOG2E)
        return out
    launch = _launch_for(q, table, block_tables, context_lens, blocks_per_segment, num_splits,
                         config, window)
    num_splits = launch.plan.num_splits
    out = decode_output(q, out)
    part_out, part_lse = launch.partials or (out, out)
    # Without fp8 the scale pointers are never read: any tensor will do.
    fp8 = launch.plan.constexprs["KV_FP8"]
    launch.kernel(
        (batch, table.num_kv_heads, num_splits),
        q, table.k_base, table.v_base, table.k_offsets, table.v_offsets,
        k_scale if fp8 else q, v_scale if fp8 else q, block_tables, context_lens, out, part_out,
        part_lse, launch.counters, q.stride(0), q.stride(1), block_tables.stride(0),
        out.stride(0), out.stride(1), stride_ks, stride_vs, scale * LOG2E, num_splits,
        window or 0,
    )
    return out


def decode_output(q: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """Where a decode kernel writes: out, checked against q, or a new tensor like q."""
    if out is None:
        return torch.empty_like(q)
    if out.shape != q.shape or out.dtype != q.dtype or out.stride(2) != 1:
        raise KVLayoutError(f"out must be {tuple(q.shape)} {q.dtype} with a contiguous last "
                            "dimension")
    return out


@dataclass(frozen=True)
class _Launch:
    """A checked LaunchPlan, its kernel launch, and the split counters and partial results'
    buffers it passes (an unsplit launch never reads the counters and writes the output
    instead: no partials)."""

    plan: LaunchPlan
    kernel: DirectLaunch
    counters: torch.Tensor
    partials: tuple[torch.Tensor, torch.Tensor] | None


# Launches by the shapes, strides, dtypes and devices of paged_decode's inputs. A plain tuple
# key read straight off the tensors: building a DecodeShape and checking the inputs again on
# every call would cost more host time than the small decode kernels run.
_LAUNCHES: dict[tuple, _Launch] = {}
MAX_CACHED_LAUNCHES = 4096


def _launch_for(q, table, block_tables, context_lens, blocks_per_segment, num_splits,
                config, window) -> _Launch:
    key = launch_key(q, table, block_tables, context_lens, blocks_per_segment, num_splits, config,
                     window)
    launch = _LAUNCHES.get(key)
    if launch is None:
        check_launch(q, table, block_tables, context_lens, blocks_per_segment, window)
        plan = plan_launch(q, table, block_tables, num_splits, config, window)
        if len(_LAUNCHES) >= MAX_CACHED_LAUNCHES:
            _LAUNCHES.clear()
        batch, num_heads, head_dim = q.shape
        launch = _LAUNCHES[key] = _Launch(
            plan, DirectLaunch(_decode_split_kernel, plan.constexprs, plan.config.options()),
            split_counters(q.device, batch * table.num_kv_heads),
            None if plan.num_splits == 1 else
            decode_partials(q.device, batch, num_heads, head_dim, plan.num_splits))
    return launch


def launch_key(q, table, block_tables, context_lens, blocks_per_segment, num_splits, config,
               window) -> tuple:
    """What a cached launch of either decode kernel (this module's, kernels/fp8_decode.py's)
    depends on, every input check_launch reads included: a plain tuple read straight off the
    tensors, so that a call of another dtype or layout is checked again."""
    return (q.shape, q.stride(), q.dtype, q.device, table.dtype, table.num_kv_heads,
            table.head_dim, table.block_size, table.blocks_per_segment,
            table.k_base.element_size(), block_tables.shape, block_tables.stride(),
            block_tables.dtype, context_lens.shape, context_lens.dtype, blocks_per_segment,
            num_splits, config, window)


def check_launch(q, table, block_tables, context_lens, blocks_per_segment, window) -> None:
    """KVLayoutError unless the inputs of a paged_decode call fit a decode kernel."""
    check_inputs(q, table, block_tables, blocks_per_segment)
    if context_lens.shape != (q.shape[0],) or context_lens.dtype != torch.int32:
        raise KVLayoutError(f"context_lens must be int32 [{q.shape[0]}], got "
                            f"{context_lens.dtype} {tuple(context_lens.shape)}")
    check_window(window)


def check_window(window: int | None) -> None:
    """KVLayoutError unless window is None (full attention) or a positive key count."""
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                               or window < 1):
        raise KVLayoutError(f"window must be None or an integer >= 1, got {window!r}")


def check_inputs(q, table, block_tables, blocks_per_segment) -> None:
    """KVLayoutError unless q, the segment table and the block tables fit a decode kernel."""
    batch, num_heads, head_dim = q.shape
    if head_dim != table.head_dim or head_dim < 16 or head_dim & (head_dim - 1):
        raise KVLayoutError(f"head_dim {head_dim}: needs a power of two >= 16 matching the cache "
                            f"({table.head_dim})")
    if num_heads % table.num_kv_heads:
        raise KVLayoutError(f"{num_heads} query heads is not a multiple of "
                            f"{table.num_kv_heads} KV heads")
    check_query_dtype(q.dtype, table.dtype)
    if q.stride(2) != 1:
        raise KVLayoutError("q must have a contiguous last dimension")
    if blocks_per_segment != table.blocks_per_segment:
        raise KVLayoutError(f"blocks_per_segment {blocks_per_segment} but segments hold "
                            f"{table.blocks_per_segment} blocks")
    if block_tables.dtype != torch.int32 or block_tables.stride(1) != 1:
        raise KVLayoutError("block_tables must be int32 with a contiguous last dimension")
    if block_tables.shape[0] != batch:
        raise KVLayoutError(f"block_tables {tuple(block_tables.shape)} must have {batch} rows")
