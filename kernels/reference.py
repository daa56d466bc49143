"""Pure-torch oracles for paged decode and prefill attention: gather the blocks, then attend.

The "concatenate, then compute" version: every sequence's KV is gathered from the segment
tensors through its block table into one contiguous tensor, and plain softmax attention runs on
it in a wide float type. Slow and memory-hungry on purpose: it is the reference every Triton
kernel in this package is tested against, so it must be obviously right rather than fast.

Cache layout (shared with kernels/paged_decode.py): segment s holds global blocks
s * blocks_per_segment .. (s + 1) * blocks_per_segment - 1 as a tensor
[blocks_per_segment, block_size, num_kv_heads, head_dim] (a float8 cache's V transposed in runs
of tokens, kernels/segments.py); a segment id with no memory behind it is None in the list. A float8
e4m3 cache is gathered, then dequantized (times its k_scale / v_scale, kernels/fp8.py): the
kernels must compute attention over exactly those values.

A sliding window (`window`, Mistral's): the query at position p attends keys p - window + 1 .. p.
Blocks that lie wholly before the first key a sequence's queries read are never gathered, so
their block-table entries may hold anything (an allocator lets them go).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from kernels.fp8 import FP8_DTYPE, FP8_MAX
from kernels.segments import token_values, values_transposed


def quantize_kv(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [..., Hkv, D] / scale ([1] or [Hkv]) rounded to float8 e4m3, clamped to +-FP8_MAX."""
    scaled = x.float() / scale.float().to(x.device).reshape(-1, 1)
    return scaled.clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def window_start(position: torch.Tensor, window: int | None) -> torch.Tensor:
    """The first key the query at `position` attends to (0 without a window)."""
    if window is None:
        return torch.zeros_like(position)
    return (position - window + 1).clamp(min=0)


def gather_dequantized(
    segments: Sequence[torch.Tensor | None],
    scale: torch.Tensor | None,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    blocks_per_segment: int,
    dtype: torch.dtype,
    first_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """gather_kv, then, for a float8 cache (scale not None), the values it stands for in dtype:
    times scale ([1] or [Hkv]). Gathered as bytes, since torch indexes few float8 operations."""
    if scale is None:
        return gather_kv(segments, block_tables, context_lens, blocks_per_segment, first_tokens)
    raw = [None if t is None else t.view(torch.uint8) for t in segments]
    tokens = gather_kv(raw, block_tables, context_lens, blocks_per_segment,
                       first_tokens).view(FP8_DTYPE)
    return tokens.to(dtype) * scale.to(tokens.device, dtype).reshape(-1, 1)


def gather_kv(
    segments: Sequence[torch.Tensor | None],
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    blocks_per_segment: int,
    first_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Copy every sequence's tokens out of the paged cache: [B, max_context, Hkv, D].

    Positions past a sequence's context length are zero. Block-table entries past
    ceil(context / block_size) are never read, so they may hold any padding value; nor are
    those of blocks wholly before first_tokens[b] (the sequence's first key read), whose
    positions are zero too.
    """
    first = next(t for t in segments if t is not None)
    block_size, num_kv_heads, head_dim = first.shape[1:]
    lens = context_lens.to(device="cpu", dtype=torch.int64)
    batch = lens.numel()
    max_context = int(lens.max()) if batch else 0
    num_blocks = -(-max_context // block_size)
    out = first.new_zeros(batch, num_blocks, block_size, num_kv_heads, head_dim)
    blocks = block_tables[:, :num_blocks].to(device="cpu", dtype=torch.int64)
    used = torch.arange(num_blocks) < ((lens + block_size - 1) // block_size)[:, None]
    if first_tokens is not None:
        first = first_tokens.to(device="cpu", dtype=torch.int64) // block_size
        used &= torch.arange(num_blocks) >= first[:, None]
    segment_ids = torch.where(used, blocks // blocks_per_segment, -1)
    local = blocks % blocks_per_segment
    for seg, tensor in enumerate(segments):
        picked = segment_ids == seg
        if tensor is None or not bool(picked.any()):
            continue
        out[picked.to(out.device)] = tensor[local[picked].to(tensor.device)]
    missing = used & ~torch.isin(segment_ids, _backed_ids(segments))
    if bool(missing.any()):
        raise IndexError("block table references a segment with no tensor behind it")
    tokens = out.reshape(batch, num_blocks * block_size, num_kv_heads, head_dim)
    positions = torch.arange(num_blocks * block_size, device=out.device)
    tokens[positions[None, :] >= lens.to(out.device)[:, None]] = 0
    return tokens[:, :max_context]


def value_segments(v_segments: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """V segments as [blocks_per_segment, block_size, num_kv_heads, head_dim], those a float8
    cache stores transposed (kernels/segments.py) as token-major copies."""
    return [t if t is None or not values_transposed(t.dtype) else token_values(t)
            for t in v_segments]


def _backed_ids(segments: Sequence[torch.Tensor | None]) -> torch.Tensor:
    return torch.tensor([s for s, t in enumerate(segments) if t is not None], dtype=torch.int64)


def reference_decode(
    q: torch.Tensor,
    k_segments: Sequence[torch.Tensor | None],
    v_segments: Sequence[torch.Tensor | None],
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    blocks_per_segment: int,
    scale: float | None = None,
    compute_dtype: torch.dtype = torch.float32,
    *,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Decode attention of one query token per sequence over its paged KV, in compute_dtype.

    q [B, Hq, D]; returns [B, Hq, D] in compute_dtype. Hq must be a multiple of Hkv (GQA: query
    head h reads KV head h // (Hq // Hkv)). A sequence of context length 0 gets a zero output.
    k_scale, v_scale: a float8 cache's scales, as paged_decode takes them. window: the query
    (at position context - 1) attends only the last `window` keys.
    """
    batch, num_heads, head_dim = q.shape
    lens = context_lens.to(device="cpu", dtype=torch.int64)
    first = window_start(lens - 1, window)
    keys = gather_dequantized(k_segments, k_scale, block_tables, context_lens,
                              blocks_per_segment, compute_dtype, first)
    values = gather_dequantized(value_segments(v_segments), v_scale, block_tables,
                                context_lens, blocks_per_segment, compute_dtype, first)
    num_kv_heads = keys.shape[2]
    group = num_heads // num_kv_heads
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    qg = q.to(compute_dtype).reshape(batch, num_kv_heads, group, head_dim)
    keys = keys.to(device=q.device, dtype=compute_dtype)
    values = values.to(device=q.device, dtype=compute_dtype)
    scores = torch.einsum("bhgd,bthd->bhgt", qg, keys) * scale
    positions = torch.arange(keys.shape[1], device=q.device)[None, :]
    unread = (positions >= lens.to(q.device)[:, None]) | (positions < first.to(q.device)[:, None])
    scores = scores.masked_fill(unread[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    out = torch.einsum("bhgt,bthd->bhgd", probs, values)
    return out.reshape(batch, num_heads, head_dim)


def reference_prefill(
    q: torch.Tensor,
    k_segments: Sequence[torch.Tensor | None],
    v_segments: Sequence[torch.Tensor | None],
    block_tables: torch.Tensor,
    query_starts: torch.Tensor,
    context_lens: torch.Tensor,
    blocks_per_segment: int,
    scale: float | None = None,
    compute_dtype: torch.dtype = torch.float32,
    *,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Causal attention of packed query chunks over their sequences' paged KV, in compute_dtype.

    q [T, Hq, D]: rows query_starts[p] .. query_starts[p+1]-1 are the last q_len tokens of
    sequence p, whose KV is context_lens[p] long (those tokens included); query token i sits
    at position context - q_len + i and attends keys 0 .. that position (with a window, only
    the last `window` of them). Returns [T, Hq, D]. k_scale, v_scale: a float8 cache's scales,
    as paged_prefill takes them.
    """
    num_tokens, num_heads, head_dim = q.shape
    q_lens = (query_starts[1:] - query_starts[:-1]).to(device="cpu", dtype=torch.int64)
    first = window_start(context_lens.to(device="cpu", dtype=torch.int64) - q_lens, window)
    keys = gather_dequantized(k_segments, k_scale, block_tables, context_lens,
                              blocks_per_segment, compute_dtype, first)
    values = gather_dequantized(value_segments(v_segments), v_scale, block_tables,
                                context_lens, blocks_per_segment, compute_dtype, first)
    num_kv_heads = keys.shape[2]
    group = num_heads // num_kv_heads
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    starts = query_starts.tolist()
    out = torch.zeros(num_tokens, num_heads, head_dim, dtype=compute_dtype, device=q.device)
    for seq, context in enumerate(context_lens.tolist()):
        rows = slice(starts[seq], starts[seq + 1])
        q_len = starts[seq + 1] - starts[seq]
        if q_len == 0:
            continue
        qs = q[rows].to(compute_dtype).reshape(q_len, num_kv_heads, group, head_dim)
        ks = keys[seq, :context].to(device=q.device, dtype=compute_dtype)
        vs = values[seq, :context].to(device=q.device, dtype=compute_dtype)
        scores = torch.einsum("qhgd,khd->hgqk", qs, ks) * scale
        positions = torch.arange(q_len, device=q.device) + context - q_len
        key_positions = torch.arange(context, device=q.device)[None, :]
        unread = (key_positions > positions[:, None]) | (
            key_positions < window_start(positions, window)[:, None])
        probs = torch.softmax(scores.masked_fill(unread, float("-inf")), dim=-1)
        out[rows] = torch.einsum("hgqk,khd->qhgd", probs, vs).reshape(q_len, num_heads, head_dim)
    return out
