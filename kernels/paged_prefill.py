"""Paged prefill attention in Triton: variable-length query chunks over KV spread in segments.

A step packs the query tokens of several sequences: rows query_starts[p] .. query_starts[p+1]-1
are the last q_len tokens of sequence p, whose KV (context before the chunk and the chunk
itself, already stored by kernels/kv_write.py) is context_lens[p] long. Query token i sits at
position context - q_len + i and attends keys 0 .. that position (causal, bottom-right): a
fresh prompt, a chunk after a prefix-cache hit, a later chunk of a long prompt and a
recomputed prefix are all the same case. K/V are read through the block table and the segment
table exactly as kernels/paged_decode.py reads them (shared load_key_tile), so no context is
gathered and no KV head is repeated. A float8 e4m3 cache is dequantized as paged_decode
dequantizes it: K/V converted to the dots' dtype on load (float16 under a bfloat16 q), K's scale
folded into the score scale and V's into the output.

Algorithm (flash attention, forward): grid (query tile, kv_head, split). A tile holds BLOCK_Q
query tokens times the query heads of one KV head (GQA), BLOCK_M = BLOCK_Q * BLOCK_G rows, so
every K/V tile loaded feeds the whole group. Keys below the tile's first position are seen by every
row and stream with no mask; the few tiles on the diagonal apply the causal mask. Online
softmax in base 2, in float32. Tiles of all sequences are numbered in one range: sequence p's
first tile is query_starts[p] // BLOCK_Q + p, which bounds the grid from the host shapes
alone (no synchronisation) and lets a program find its sequence by binary search.

Split-KV (as paged_decode's flash-decoding): few query tiles over a long context make a grid
far smaller than the GPU, each program streaming every key in turn. With num_splits > 1, split
s of a tile takes the s-th share of the tile's key range in whole key tiles, and each stretch
(window-masked, unmasked, diagonal) is cut to that share, so every key tile, masked or not, is
read by exactly the split it falls in and the splits stay even. Each split writes a normalised
float32 partial output and its base-2 log-sum-exp (-inf where a row saw no key) per row and
head; paged_decode's reduce kernel combines them into the chunks' rows only. One split is the
kernel without partials. The split count is chosen from the shapes alone (default_num_splits),
so the launch can be captured in a CUDA graph.

A sliding window (the query at position p reads keys p - window + 1 .. p) bounds the keys from
below too: the stream starts at the tile holding the first key the tile's first query reads,
keys before the last query's window start are masked per row, and the unmasked stretch is
what every row reads. Blocks before the window are never loaded, nor their table entries read.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import triton
import triton.language as tl

from kernels import occupancy
from kernels.fp8 import check_query_dtype, check_scales, is_fp8
from kernels.launch import DirectLaunch
from kernels.paged_decode import LOG2E, check_window
from kernels.prefill_launch import PrefillConfig, choose_num_splits, default_config
from kernels.segments import ALIGN_BYTES, KVLayoutError, SegmentTable, segment_table
from kernels.split_kv import partials, reduce_launch, use_pdl
from kernels.tl_helpers import load_key_tile, round_to_bf16, saturate_to_fp16, softmax_step


@triton.jit
def _attend(q, m_i, l_i, acc, pos, bt_row, K_base, V_base, K_offsets, V_offsets, head_col,
            start, end, qk_scale, lo, window,
            CAUSAL: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCKS_PER_SEGMENT: tl.constexpr,
            BLOCK_N: tl.constexpr, TOKEN_STRIDE: tl.constexpr,
            ALIGN: tl.constexpr, INPUT_PRECISION: tl.constexpr, EMULATE_BF16: tl.constexpr,
            DOT_FP16: tl.constexpr, HAS_WINDOW: tl.constexpr, SPLIT: tl.constexpr,
            V_T: tl.constexpr):
    """Online softmax of the tile's rows over keys start..end-1 (start a multiple of BLOCK_N;
    none when end <= start). Without CAUSAL every key is visible to every row and end is a
    multiple of BLOCK_N. With a window, CAUSAL tiles also mask each row's keys before its
    window, and no key before lo (the first any row reads) is loaded. V_T: the cache holds V
    transposed in runs (tl_helpers.load_values_transposed); CAUSAL tiles zero the values of
    keys from end on, which may never have been written."""
    for tile in range(start, end, BLOCK_N):
        tok, valid, k, v = load_key_tile(bt_row, K_base, V_base, K_offsets, V_offsets,
                                         head_col, tile, lo, end, q.dtype, TOKEN_STRIDE,
                                         BLOCK_SIZE, BLOCKS_PER_SEGMENT, BLOCK_N, ALIGN,
                                         HAS_WINDOW, CAUSAL, V_T, V_T and CAUSAL)
        scores = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION) * qk_scale
        if CAUSAL:
            seen = (tok[None, :] <= pos[:, None]) & valid[None, :]
            if HAS_WINDOW:
                seen = seen & (tok[None, :] > pos[:, None] - window)
            scores = tl.where(seen, scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, 1))
        if HAS_WINDOW or SPLIT:
            # A row whose window starts past this tile, or (a split starting on the diagonal)
            # whose position is before it, sees no key here yet: its maximum is still -inf,
            # and the exponentials are taken from 0 (giving 0) rather than NaN.
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            # Every row has a finite maximum from its first tile on: the first diagonal tile
            # holds key 0 or follows unmasked tiles, so m_new is never -inf here.
            m_ref = m_new
        acc, l_i = softmax_step(acc, m_i, l_i, scores, m_ref, v, INPUT_PRECISION, EMULATE_BF16,
                                DOT_FP16)
        m_i = m_new
    return m_i, l_i, acc


@triton.jit(do_not_specialize=["num_seqs", "num_tiles", "num_splits", "window"])
def _prefill_kernel(
    Q, K_base, V_base, K_offsets, V_offsets, K_scale, V_scale, Block_tables, Query_starts,
    Context_lens, Out, Part_out, Part_lse, stride_qt, stride_qh, stride_bt, stride_ot,
    stride_oh, stride_ks, stride_vs, qk_scale, num_seqs, num_tiles, num_splits, window,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_Q: tl.constexpr,
    HEAD_DIM: tl.constexpr, NUM_KV_HEADS: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCKS_PER_SEGMENT: tl.constexpr, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, EMULATE_BF16: tl.constexpr, KV_FP8: tl.constexpr,
    DOT_FP16: tl.constexpr, HAS_WINDOW: tl.constexpr, SPLIT: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    if USE_PDL:
        # The reduce kernel may be scheduled now; its programs wait in gdc_wait for this grid.
        tl.extra.cuda.gdc_launch_dependents()
    BLOCK_M: tl.constexpr = BLOCK_Q * BLOCK_G
    TOKEN_STRIDE: tl.constexpr = NUM_KV_HEADS * HEAD_DIM
    # Highest tile numbers first: a sequence's later query tiles attend to the most keys, and
    # starting the longest programs first leaves short ones to fill the last wave.
    tile_id = num_tiles - 1 - tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)

    # The sequence: the last p whose first tile number is <= tile_id.
    lo = num_seqs * 0
    hi = num_seqs
    while hi - lo > 1:
        mid = (lo + hi) // 2
        below = tl.load(Query_starts + mid) // BLOCK_Q + mid <= tile_id
        lo = tl.where(below, mid, lo)
        hi = tl.where(below, hi, mid)
    seq = lo
    q_start = tl.load(Query_starts + seq)
    q_len = tl.load(Query_starts + seq + 1) - q_start
    first_q = (tile_id - (q_start // BLOCK_Q + seq)) * BLOCK_Q
    if first_q >= q_len:
        return  # the grid is an upper bound on the tiles
    prefix = tl.load(Context_lens + seq) - q_len

    r = tl.arange(0, BLOCK_M)
    q_idx = first_q + r // BLOCK_G
    g = r % BLOCK_G
    row_valid = (q_idx < q_len) & (g < GROUP)
    pos = prefix + q_idx
    heads = kv_head * GROUP + g
    d = tl.arange(0, HEAD_DIM)
    row_t = (q_start + q_idx).to(tl.int64)
    q = tl.load(Q + row_t[:, None] * stride_qt + heads[:, None] * stride_qh + d[None, :],
                mask=row_valid[:, None], other=0.0)
    if DOT_FP16:
        q = saturate_to_fp16(q)
    elif EMULATE_BF16:
        q = q.to(tl.float32)
    bt_row = Block_tables + seq.to(tl.int64) * stride_bt
    head_col = kv_head * HEAD_DIM + d
    if KV_FP8:
        qk_scale = qk_scale * tl.load(K_scale + kv_head * stride_ks)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    # Up to one past the tile's last valid position; up to full_end, whole tiles of keys at or
    # before the first row's position.
    end = prefix + tl.minimum(q_len, first_q + BLOCK_Q)
    full_end = (prefix + first_q + 1) // BLOCK_N * BLOCK_N
    if HAS_WINDOW:
        # lo: the first key the first row reads; from shared on (whole tiles), every row's.
        lo = tl.maximum(prefix + first_q - window + 1, 0)
        shared = tl.minimum(tl.cdiv(tl.maximum(end - window, 0), BLOCK_N) * BLOCK_N, full_end)
    else:
        lo = 0
        shared = 0
    # This program's keys: the tile's from the key tile holding lo, or with splits its share of
    # them in whole key tiles. Each stretch (window-masked, unmasked, diagonal) is cut to them.
    start = lo // BLOCK_N * BLOCK_N
    stop = end
    if SPLIT:
        split_keys = tl.cdiv(tl.cdiv(end - start, num_splits), BLOCK_N) * BLOCK_N
        start += split * split_keys
        stop = tl.minimum(start + split_keys, end)
    if HAS_WINDOW:
        m_i, l_i, acc = _attend(q, m_i, l_i, acc, pos, bt_row, K_base, V_base, K_offsets,
                                V_offsets, head_col, start, tl.minimum(shared, stop), qk_scale,
                                lo, window, True, BLOCK_SIZE, BLOCKS_PER_SEGMENT, BLOCK_N,
                                TOKEN_STRIDE, ALIGN, INPUT_PRECISION, EMULATE_BF16, DOT_FP16,
                                HAS_WINDOW, SPLIT, KV_FP8)
    # Keys every row of the tile sees, in whole tiles, unmasked.
    m_i, l_i, acc = _attend(q, m_i, l_i, acc, pos, bt_row, K_base, V_base, K_offsets, V_offsets,
                            head_col, tl.maximum(shared, start), tl.minimum(full_end, stop),
                            qk_scale, lo, window, False, BLOCK_SIZE, BLOCKS_PER_SEGMENT,
                            BLOCK_N, TOKEN_STRIDE, ALIGN, INPUT_PRECISION, EMULATE_BF16,
                            DOT_FP16, HAS_WINDOW, SPLIT, KV_FP8)
    # The diagonal.
    m_i, l_i, acc = _attend(q, m_i, l_i, acc, pos, bt_row, K_base, V_base, K_offsets, V_offsets,
                            head_col, tl.maximum(full_end, start), stop, qk_scale, lo, window,
                            True, BLOCK_SIZE, BLOCKS_PER_SEGMENT, BLOCK_N, TOKEN_STRIDE, ALIGN,
                            INPUT_PRECISION, EMULATE_BF16, DOT_FP16, HAS_WINDOW, SPLIT, KV_FP8)

    if KV_FP8:
        acc = acc * tl.load(V_scale + kv_head * stride_vs)
    if SPLIT:
        # The normalised partial output and its log-sum-exp (-inf for a row that saw no key)
        # at Part_out[(row * heads + head) * num_splits + split], as the reduce reads them.
        has_keys = l_i > 0
        out = acc / tl.where(has_keys, l_i, 1.0)[:, None]
        part = (row_t * (NUM_KV_HEADS * GROUP) + heads) * num_splits + split
        tl.store(Part_out + part[:, None] * HEAD_DIM + d[None, :], out, mask=row_valid[:, None])
        lse = tl.where(has_keys, m_i + tl.log2(tl.where(has_keys, l_i, 1.0)), float("-inf"))
        tl.store(Part_lse + part, lse, mask=row_valid)
    else:
        if HAS_WINDOW:  # padding rows past the chunk may see no key at all
            l_i = tl.where(l_i > 0, l_i, 1.0)
        out = acc / l_i[:, None]
        if EMULATE_BF16:
            out = round_to_bf16(out)
        tl.store(Out + row_t[:, None] * stride_ot + heads[:, None] * stride_oh + d[None, :],
                 out.to(Out.dtype.element_ty), mask=row_valid[:, None])


@dataclass(frozen=True)
class PrefillShape:
    """What a plan reads off paged_prefill's inputs besides their lengths: the heads, the cache
    layout, q's dtype (dtype) and the cache's, the device, whether a window applies."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    block_size: int
    blocks_per_segment: int
    dtype: torch.dtype
    device: torch.device
    cache_dtype: torch.dtype
    has_window: bool = False


@dataclass(frozen=True, eq=False)
class PrefillPlan:
    """Launch shape, split count and compile-time constants of paged_prefill for one shape.
    Plans are made once per shape by plan_prefill and compared by identity."""

    shape: PrefillShape
    config: PrefillConfig
    block_q: int
    num_splits: int
    constexprs: tuple  # sorted (name, value) pairs
    launch: DirectLaunch = field(init=False, repr=False)
    reduce: DirectLaunch | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        consts = dict(self.constexprs)
        options = dict(num_warps=self.config.num_warps, num_stages=self.config.num_stages)
        object.__setattr__(self, "launch", DirectLaunch(_prefill_kernel, consts, options))
        object.__setattr__(self, "reduce", None if self.num_splits == 1 else reduce_launch(
            self.shape.num_heads, self.shape.head_dim, self.num_splits,
            consts["EMULATE_BF16"], consts["USE_PDL"], limit_rows=True))

    def num_tiles(self, num_tokens: int, num_seqs: int) -> int:
        """Grid size along the query tiles: an upper bound read off the shapes alone."""
        return num_tokens // self.block_q + num_seqs

    def max_keys(self, table_width: int, window: int | None) -> int:
        """The most keys one query tile reads through a block table table_width blocks wide:
        the table's span, or a window's keys and the rows and key tile around them."""
        span = table_width * self.shape.block_size
        return span if window is None else min(span, window + self.block_q + self.config.block_n)

    def programs_per_sm(self) -> int:
        """Programs of the compiled kernel an SM holds at once (a CUDA device only), for q and
        out of contiguous rows and a block table a multiple of 16 entries wide (what Triton
        specialises on is then what the harness passes)."""
        s = self.shape
        partial = torch.float32 if self.num_splits > 1 else s.dtype
        scale = torch.float32 if is_fp8(s.cache_dtype) else s.dtype
        row = s.num_heads * s.head_dim
        signature = (s.dtype, s.cache_dtype, s.cache_dtype, torch.int64, torch.int64, scale,
                     scale, torch.int32, torch.int32, torch.int32, s.dtype, partial, partial,
                     row, s.head_dim, 16, row, s.head_dim, 0, 0, 1.0, 2, 2, self.num_splits, 0)
        return occupancy.programs_per_sm(_prefill_kernel, s.device, signature, self.constexprs,
                                         (("num_stages", self.config.num_stages),
                                          ("num_warps", self.config.num_warps)))


@functools.lru_cache(maxsize=256)
def plan_prefill(shape: PrefillShape, config: PrefillConfig | None = None,
                 num_splits: int = 1) -> PrefillPlan:
    """What paged_prefill launches for this shape and split count, computed once and reused:
    a launch then costs the host only the grid's arithmetic and Triton's own dispatch."""
    dtype, device = shape.dtype, shape.device
    # Sized by q's rows: fp8 K/V rows are narrower, so the tiles fit all the more.
    config = config or default_config(device, shape.head_dim * dtype.itemsize)
    group = shape.num_heads // shape.num_kv_heads
    block_g = triton.next_power_of_2(group)
    block_q = max(1, config.block_m // block_g)
    # The Triton interpreter multiplies bfloat16 bit patterns in tl.dot (see paged_decode):
    # there bfloat16 goes through float32 with explicit rounding, the GPU's arithmetic.
    consts = dict(
        GROUP=group, BLOCK_G=block_g, BLOCK_Q=block_q, HEAD_DIM=shape.head_dim,
        NUM_KV_HEADS=shape.num_kv_heads, BLOCK_SIZE=shape.block_size,
        BLOCKS_PER_SEGMENT=shape.blocks_per_segment, BLOCK_N=config.block_n,
        ALIGN=ALIGN_BYTES // shape.cache_dtype.itemsize,
        INPUT_PRECISION="ieee" if dtype == torch.float32 else None,
        EMULATE_BF16=device.type == "cpu" and dtype == torch.bfloat16,
        KV_FP8=is_fp8(shape.cache_dtype),
        DOT_FP16=is_fp8(shape.cache_dtype) and dtype == torch.bfloat16,
        HAS_WINDOW=shape.has_window,
        SPLIT=num_splits > 1,
        USE_PDL=num_splits > 1 and use_pdl(device),
    )
    return PrefillPlan(shape, config, block_q, num_splits, tuple(sorted(consts.items())))


@functools.lru_cache(maxsize=4096)
def default_num_splits(plan: PrefillPlan, num_tokens: int, num_seqs: int, table_width: int,
                       window: int | None) -> int:
    """paged_prefill's split count when the caller gives none, for the unsplit plan of its
    shape: choose_num_splits with the compiled kernels' occupancy on a GPU (both read on the
    first call for a shape, whatever the lengths: a warm-up call compiles what later ones
    need), 1 elsewhere (the interpreter runs one program at a time). Lengths only, never
    tensor data, so the grid of a captured CUDA graph holds for any contexts that fit its
    block tables."""
    device = plan.shape.device
    if device.type != "cuda":
        return 1
    per_sm = tuple(plan_prefill(plan.shape, plan.config, splits).programs_per_sm()
                   for splits in (1, 2))
    return choose_num_splits(plan.num_tiles(num_tokens, num_seqs) * plan.shape.num_kv_heads,
                             plan.max_keys(table_width, window), occupancy.num_sms(device),
                             block_n=plan.config.block_n, programs_per_sm=per_sm)


def plan_launch(q: torch.Tensor, table: SegmentTable, block_tables: torch.Tensor,
                num_splits: int | None = None, config: PrefillConfig | None = None,
                window: int | None = None) -> PrefillPlan:
    """What paged_prefill launches for these inputs: the given split count, or
    default_num_splits' for their lengths. Reads shapes and dtypes only, no tensor data."""
    num_tokens, num_heads, head_dim = q.shape
    plan = plan_prefill(PrefillShape(num_heads, table.num_kv_heads, head_dim, table.block_size,
                                     table.blocks_per_segment, q.dtype, q.device, table.dtype,
                                     window is not None), config)
    if num_splits is None:
        num_splits = default_num_splits(plan, num_tokens, *block_tables.shape, window)
    return plan if num_splits == 1 else plan_prefill(plan.shape, config, num_splits)


def paged_prefill(
    q: torch.Tensor,
    k_segments: Sequence[torch.Tensor | None] | None,
    v_segments: Sequence[torch.Tensor | None] | None,
    block_tables: torch.Tensor,
    query_starts: torch.Tensor,
    context_lens: torch.Tensor,
    blocks_per_segment: int,
    scale: float | None = None,
    *,
    table: SegmentTable | None = None,
    config: PrefillConfig | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    window: int | None = None,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Causal attention of packed query chunks over their sequences' paged KV: out [T, Hq, D]
    in q's dtype.

    q [T, Hq, D] (any row and head strides, contiguous last dimension); query_starts [P + 1]
    int32 cumulative row offsets (query_starts[0] == 0, query_starts[P] <= T); context_lens [P]
    int32, each sequence's KV length with its query tokens included (so >= its query length);
    block_tables [P, max_blocks] int32 global block ids. The chunks' own K/V must be in the
    cache already. Pass `table` to skip rebuilding the segment table. A float8_e4m3fn cache
    needs k_scale and v_scale as kernels.paged_decode.paged_decode takes them. window: a
    sliding window, as paged_decode takes it (a query at position p reads keys p - window + 1
    .. p).

    num_splits: how many programs share each query tile's keys (their partial outputs then
    combined by a second kernel); by default default_num_splits chooses from T, P, the
    block-table width and the GPU (plan_launch says what it chose). Nothing is read on the
    host from any tensor, so the launch needs no synchronisation and can be captured in a
    CUDA graph; the partials' scratch is allocated here, from a graph's pool under capture.

    Rows of q past query_starts[P] belong to no chunk: their output is left as it was. out:
    where to write instead of a new tensor, [T, Hq, D] in q's dtype with a contiguous last
    dimension; only the chunks' rows are written.
    """
    table = segment_table(k_segments, v_segments) if table is None else table
    _check_inputs(q, table, block_tables, query_starts, context_lens, blocks_per_segment)
    check_window(window)
    if num_splits is not None and num_splits < 1:
        raise KVLayoutError(f"num_splits must be at least 1, got {num_splits}")
    stride_ks, stride_vs = check_scales(table.dtype, k_scale, v_scale, table.num_kv_heads,
                                        q.device)
    plan = plan_launch(q, table, block_tables, num_splits, config, window)
    num_splits = plan.num_splits
    num_tokens, num_heads, head_dim = q.shape
    num_seqs = context_lens.shape[0]
    if out is None:
        out = torch.empty(num_tokens, num_heads, head_dim, dtype=q.dtype, device=q.device)
    elif out.shape != q.shape or out.dtype != q.dtype or out.stride(2) != 1:
        raise KVLayoutError(f"out must be {tuple(q.shape)} {q.dtype} with a contiguous last "
                            "dimension")
    if num_tokens == 0:
        return out
    # Rows no chunk holds are never written nor reduced.
    part_out, part_lse = partials(out, num_tokens, num_splits)
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    num_tiles = plan.num_tiles(num_tokens, num_seqs)
    # Without fp8 the scale pointers are never read: any tensor will do.
    fp8 = is_fp8(table.dtype)
    plan.launch(
        (num_tiles, table.num_kv_heads, num_splits),
        q, table.k_base, table.v_base, table.k_offsets, table.v_offsets,
        k_scale if fp8 else q, v_scale if fp8 else q, block_tables, query_starts, context_lens,
        out, part_out, part_lse, q.stride(0), q.stride(1), block_tables.stride(0),
        out.stride(0), out.stride(1), stride_ks, stride_vs, scale * LOG2E, num_seqs, num_tiles,
        num_splits, window or 0,
    )
    if num_splits > 1:
        # Only the chunks' rows, those before query_starts[P], are combined and written.
        plan.reduce((num_tokens, num_heads, 1), part_out, part_lse, out, out.stride(0),
                    out.stride(1), num_splits, query_starts, num_seqs)
    return out


def _check_inputs(q, table, block_tables, query_starts, context_lens, blocks_per_segment):
    num_heads, head_dim = q.shape[1:]
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
    num_seqs = context_lens.shape[0]
    if block_tables.shape[0] != num_seqs or query_starts.shape != (num_seqs + 1,):
        raise KVLayoutError(f"block_tables {tuple(block_tables.shape)}, query_starts "
                            f"{tuple(query_starts.shape)} and context_lens "
                            f"{tuple(context_lens.shape)} disagree on the number of sequences")
    if query_starts.dtype != torch.int32 or context_lens.dtype != torch.int32:
        raise KVLayoutError("query_starts and context_lens must be int32")
