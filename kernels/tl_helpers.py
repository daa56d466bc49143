"""Triton device functions shared by the paged attention kernels (kernels/paged_decode.py,
kernels/balanced_decode.py, kernels/paged_prefill.py, kernels/split_kv.py): one addressing of
the paged cache, one key tile's online-softmax step (every attention kernel), one query row's
attention over a run of its keys (both decode kernels), and the dtype handling that keeps the
GPU's and the interpreter's arithmetic alike."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def tile_rows(bt_row, K_offsets, V_offsets, tile, tok, valid, lo, end,
              BLOCK_SIZE: tl.constexpr, BLOCKS_PER_SEGMENT: tl.constexpr, BLOCK_N: tl.constexpr,
              BLOCK_STRIDE: tl.constexpr, TOKEN_STRIDE: tl.constexpr, ALIGN: tl.constexpr):
    """Element offsets from K_base and V_base of the tile's tokens `tok`, KV head 0: one
    addressing of the paged cache (block table, then segment table) for both kernels. lo and
    end bound the tokens whose table entries hold blocks (those before lo may hold anything).

    Over blocks smaller than a tile each token looks up its block, and its segment's offsets
    come from one scalar load for the segment of the tile's first token from lo on (the
    anchor): only tokens of another segment, in a tile that crosses a segment boundary,
    gather their own. Gathering every token's offsets compiled the block-size-1 kernel to
    another occupancy than the block-size-16 one (so also other split counts where
    plan_launch reads occupancy), which left the two apart by up to a tenth either way at the
    executor's decode shapes; with the anchor they time alike
    (benchmarks/probe_block_sizes.py, probe_steps.py --allocators)."""
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
        anchor = tl.maximum(tile, lo)
        # No token of the tile is read when the anchor is not: segment 0 then, never used.
        anchor_seg = tl.load(bt_row + anchor // BLOCK_SIZE, mask=anchor < end,
                             other=0) // BLOCKS_PER_SEGMENT
        other = valid & (seg != anchor_seg)
        k_rows = tl.where(other, tl.load(K_offsets + seg, mask=other, other=0),
                          tl.load(K_offsets + anchor_seg)) * ALIGN + inner
        v_rows = tl.where(other, tl.load(V_offsets + seg, mask=other, other=0),
                          tl.load(V_offsets + anchor_seg)) * ALIGN + inner
    return k_rows, v_rows


@triton.jit
def load_values_transposed(bt_row, V_base, V_offsets, head_col, tile, lo, end,
                           BLOCK_SIZE: tl.constexpr, BLOCKS_PER_SEGMENT: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_STRIDE: tl.constexpr, ALIGN: tl.constexpr,
                           HAS_LO: tl.constexpr):
    """The V tile [BLOCK_N, head_dim] of tokens tile .. tile + BLOCK_N - 1 (tile a multiple of
    BLOCK_N) from a cache that holds V transposed in runs of RUN tokens, [runs, num_kv_heads,
    head_dim, RUN] a block (an fp8 cache, kernels/segments.py value_run); runs wholly outside
    lo .. end - 1 read as zero.

    One block-table and segment lookup per run; one head's run is head_dim x RUN contiguous
    bytes, so the loads are whole vector loads, and the P.V dot reads its operand with its
    tokens (the reduction axis) adjacent. A loaded run's tokens outside the range hold
    whatever their slots hold, for zero weights. Slots past a sequence's context may never
    have been written, and an e4m3 byte of garbage may be NaN, which a zero weight does not
    cancel: the caller zeroes those in the tile that reaches past the context (a select per
    byte, so in that tile alone)."""
    RUN: tl.constexpr = min(BLOCK_SIZE & -BLOCK_SIZE, 16)  # kernels/segments.py value_run
    RUNS: tl.constexpr = BLOCK_N // RUN
    r = tl.arange(0, RUNS)
    t = tl.arange(0, RUN)
    first = tile + r * RUN
    live = first < end
    if HAS_LO:
        live = live & (first + RUN > lo)
    block = tl.load(bt_row + first // BLOCK_SIZE, mask=live, other=0)
    seg = block // BLOCKS_PER_SEGMENT
    # The run's place in its block, times the run's size: the compiler sees whole runs.
    in_block = ((tile // RUN + r) % (BLOCK_SIZE // RUN)) * (RUN * (BLOCK_STRIDE // BLOCK_SIZE))
    rows = (tl.load(V_offsets + seg, mask=live, other=0) * ALIGN
            + (block - seg * BLOCKS_PER_SEGMENT).to(tl.int64) * BLOCK_STRIDE + in_block)
    v = tl.load(V_base + rows[:, None, None] + head_col[None, :, None] * RUN
                + t[None, None, :], mask=live[:, None, None], other=0.0)
    return tl.reshape(tl.permute(v, (0, 2, 1)), (BLOCK_N, head_col.shape[0]))


@triton.jit
def load_key_tile(bt_row, K_base, V_base, K_offsets, V_offsets, head_col, tile, lo, end,
                  dtype: tl.constexpr, TOKEN_STRIDE: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                  BLOCKS_PER_SEGMENT: tl.constexpr, BLOCK_N: tl.constexpr, ALIGN: tl.constexpr,
                  HAS_LO: tl.constexpr, MASKED: tl.constexpr, V_T: tl.constexpr,
                  ZERO_TAIL: tl.constexpr):
    """The key tile from `tile` for both attention kernels: its token positions, which of them
    lie in lo .. end - 1 (only from lo with HAS_LO), and their K and V of the columns head_col,
    in `dtype` (fp8 converted exactly; float32 where the interpreter emulates bfloat16).
    Without MASKED every token of the tile is read (a tile wholly inside the range). V_T: V
    transposed in runs (load_values_transposed); ZERO_TAIL zeroes V outside the range."""
    BLOCK_STRIDE: tl.constexpr = BLOCK_SIZE * TOKEN_STRIDE
    tok = tile + tl.arange(0, BLOCK_N)
    valid = tok < end
    if HAS_LO:
        valid = valid & (tok >= lo)
    k_rows, v_rows = tile_rows(bt_row, K_offsets, V_offsets, tile, tok, valid, lo, end,
                               BLOCK_SIZE, BLOCKS_PER_SEGMENT, BLOCK_N, BLOCK_STRIDE,
                               TOKEN_STRIDE, ALIGN)
    if MASKED:
        k = tl.load(K_base + k_rows[:, None] + head_col[None, :], mask=valid[:, None], other=0.0)
    else:
        k = tl.load(K_base + k_rows[:, None] + head_col[None, :])
    if V_T:
        v = load_values_transposed(bt_row, V_base, V_offsets, head_col, tile, lo, end,
                                   BLOCK_SIZE, BLOCKS_PER_SEGMENT, BLOCK_N, BLOCK_STRIDE, ALIGN,
                                   HAS_LO)
    elif MASKED:
        v = tl.load(V_base + v_rows[:, None] + head_col[None, :], mask=valid[:, None],
                    other=0.0)
    else:
        v = tl.load(V_base + v_rows[:, None] + head_col[None, :])
    k = k.to(dtype)
    v = v.to(dtype)
    if ZERO_TAIL:
        v = tl.where(valid[:, None], v, 0.0)
    return tok, valid, k, v


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


@triton.jit
def load_query(Q, row, stride_qb, stride_qh, heads, g, d, GROUP: tl.constexpr,
               DOT_FP16: tl.constexpr, EMULATE_BF16: tl.constexpr):
    """The query heads `heads` (those of one KV head; rows g >= GROUP are zeros) of one query
    row, in the dots' dtype: float16 over an fp8 cache under a bfloat16 q (saturated),
    float32 where the interpreter emulates bfloat16."""
    q = tl.load(Q + row * stride_qb + heads[:, None] * stride_qh + d[None, :],
                mask=(g < GROUP)[:, None], other=0.0)
    if DOT_FP16:
        q = saturate_to_fp16(q)
    elif EMULATE_BF16:
        q = q.to(tl.float32)
    return q


@triton.jit
def attend_keys(q, bt_row, K_base, V_base, K_offsets, V_offsets, head_col, qk_scale, first, lo,
                end, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr, NUM_KV_HEADS: tl.constexpr,
                BLOCK_SIZE: tl.constexpr, BLOCKS_PER_SEGMENT: tl.constexpr,
                BLOCK_N: tl.constexpr, ALIGN: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                EMULATE_BF16: tl.constexpr, DOT_FP16: tl.constexpr, HAS_LO: tl.constexpr,
                V_T: tl.constexpr):
    """Online softmax (base 2) of one query row's heads over keys lo .. end - 1 of the row
    whose block table starts at bt_row, in tiles of BLOCK_N from `first` (a multiple of
    BLOCK_N, at most lo; keys before lo are masked only with HAS_LO). V_T: the cache holds V
    transposed in runs (load_values_transposed), and the tile that ends past `end` zeroes
    its values from end on, in a step of its own so that the others do not. Returns
    the unnormalised output, the running maximum and the sum of weights (0 where no key was
    seen)."""
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, HEAD_DIM], tl.float32)
    # An empty range (a split past the context) has first >= end: no tail tile then.
    whole_end = tl.maximum(end // BLOCK_N * BLOCK_N, first) if V_T else end
    for tile in range(first, whole_end, BLOCK_N):
        acc, m_i, l_i = _key_tile(acc, m_i, l_i, q, bt_row, K_base, V_base, K_offsets,
                                  V_offsets, head_col, qk_scale, tile, lo, end, HEAD_DIM,
                                  NUM_KV_HEADS, BLOCK_SIZE, BLOCKS_PER_SEGMENT, BLOCK_N, ALIGN,
                                  INPUT_PRECISION, EMULATE_BF16, DOT_FP16, HAS_LO, V_T, False)
    if whole_end < end:
        acc, m_i, l_i = _key_tile(acc, m_i, l_i, q, bt_row, K_base, V_base, K_offsets,
                                  V_offsets, head_col, qk_scale, whole_end, lo, end, HEAD_DIM,
                                  NUM_KV_HEADS, BLOCK_SIZE, BLOCKS_PER_SEGMENT, BLOCK_N, ALIGN,
                                  INPUT_PRECISION, EMULATE_BF16, DOT_FP16, HAS_LO, V_T, True)
    return acc, m_i, l_i


@triton.jit
def _key_tile(acc, m_i, l_i, q, bt_row, K_base, V_base, K_offsets, V_offsets, head_col,
              qk_scale, tile, lo, end, HEAD_DIM: tl.constexpr, NUM_KV_HEADS: tl.constexpr,
              BLOCK_SIZE: tl.constexpr, BLOCKS_PER_SEGMENT: tl.constexpr, BLOCK_N: tl.constexpr,
              ALIGN: tl.constexpr, INPUT_PRECISION: tl.constexpr, EMULATE_BF16: tl.constexpr,
              DOT_FP16: tl.constexpr, HAS_LO: tl.constexpr, V_T: tl.constexpr,
              ZERO_TAIL: tl.constexpr):
    """attend_keys' step over the key tile from `tile`."""
    tok, valid, k, v = load_key_tile(bt_row, K_base, V_base, K_offsets, V_offsets, head_col,
                                     tile, lo, end, q.dtype, NUM_KV_HEADS * HEAD_DIM,
                                     BLOCK_SIZE, BLOCKS_PER_SEGMENT, BLOCK_N, ALIGN, HAS_LO,
                                     True, V_T, ZERO_TAIL)
    scores = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION) * qk_scale
    scores = tl.where(valid[None, :], scores, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(scores, 1))
    acc, l_i = softmax_step(acc, m_i, l_i, scores, m_new, v, INPUT_PRECISION, EMULATE_BF16,
                            DOT_FP16)
    return acc, m_new, l_i


@triton.jit
def softmax_step(acc, m_i, l_i, scores, m_ref, v, INPUT_PRECISION: tl.constexpr,
                 EMULATE_BF16: tl.constexpr, DOT_FP16: tl.constexpr):
    """One key tile of online softmax (base 2) for both attention kernels: the output and the
    sum of weights rescaled from the running maximum m_i to m_ref (the tile's new maximum, or
    0 where a row has seen no key yet), plus the tile's weights on scores and values v. The
    weights enter the P.V dot in v's dtype, rounded as the GPU rounds where the interpreter
    emulates bfloat16."""
    alpha = tl.exp2(m_i - m_ref)
    p = tl.exp2(scores - m_ref[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    if EMULATE_BF16 and not DOT_FP16:
        p = round_to_bf16(p)
    else:
        p = p.to(v.dtype)
    acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=INPUT_PRECISION)
    return acc, l_i


@triton.jit
def normalise(acc, l_i):
    """attend_keys' output divided by its sum of weights (zeros where no key was seen)."""
    return acc / tl.where(l_i > 0, l_i, 1.0)[:, None]


@triton.jit
def log_sum_exp(m_i, l_i):
    """The base-2 log-sum-exp of attend_keys' weights: -inf where no key was seen."""
    has_tokens = l_i > 0
    return tl.where(has_tokens, m_i + tl.log2(tl.where(has_tokens, l_i, 1.0)), float("-inf"))
