"""Segment tables: how the kernels reach KV spread over several segment tensors.

Segment s is a contiguous tensor [blocks_per_segment, block_size, num_kv_heads, head_dim] for K
and for V, except that a float8 cache stores V transposed in each block, [blocks_per_segment,
num_kv_heads, head_dim, block_size] (values_transposed): the decode and prefill kernels read V
as the P.V dot's second operand, whose reduction axis is the tokens, and an 8-bit operand with
its tokens adjacent is read with vector loads, where one with its head_dim adjacent was read a
byte at a time (kernels/tl_helpers.py load_values_transposed). At block_size 1 the two layouts
are the same memory. The
kernels address it through offsets from one base tensor per K and V (the first live segment):
pointer arithmetic across allocations, which the GPU and the Triton interpreter (raw host
addresses of CPU tensors) both accept. Offsets are stored in units of 16 bytes so that the
compiler can prove 16-byte alignment and issue vector loads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

ALIGN_BYTES = 16


class KVLayoutError(ValueError):
    """Segment tensors, block tables or inputs do not match the layout the kernels expect."""


@dataclass(frozen=True)
class SegmentTable:
    """Where each segment's K and V start, as seen by the kernels.

    Build it once with `segment_table` and reuse it while the live segments stay the same (a
    GPU pool rebuilds it when a segment is added or released): building it copies a small
    table to the device.
    """

    k_base: torch.Tensor
    v_base: torch.Tensor
    k_offsets: torch.Tensor  # int64 [num_segments], in units of ALIGN_BYTES from k_base
    v_offsets: torch.Tensor
    blocks_per_segment: int
    block_size: int
    num_kv_heads: int
    head_dim: int

    @property
    def dtype(self) -> torch.dtype:
        return self.k_base.dtype


def segment_table(
    k_segments: Sequence[torch.Tensor | None],
    v_segments: Sequence[torch.Tensor | None],
) -> SegmentTable:
    """Check the segment tensors and tabulate their addresses (None = segment id not backed)."""
    if len(k_segments) != len(v_segments):
        raise KVLayoutError(f"{len(k_segments)} K segments but {len(v_segments)} V segments")
    live = [(k, v) for k, v in zip(k_segments, v_segments) if k is not None or v is not None]
    if not live:
        raise KVLayoutError("no segment tensor given")
    k_base, v_base = live[0]
    shape = tuple(k_base.shape) if k_base is not None else None
    if shape is None or len(shape) != 4:
        raise KVLayoutError("segments must be [blocks_per_segment, block_size, kv_heads, head_dim]")
    v_shape = value_shape(shape, k_base.dtype)
    for k, v in live:
        for t, want in ((k, shape), (v, v_shape)):
            if t is None or tuple(t.shape) != want or t.dtype != k_base.dtype:
                raise KVLayoutError(f"every live segment needs K of shape {shape} and V of "
                                    f"shape {v_shape}, dtype {k_base.dtype}")
            if not t.is_contiguous() or t.device != k_base.device:
                raise KVLayoutError("segment tensors must be contiguous and on one device")
    return SegmentTable(
        k_base=k_base,
        v_base=v_base,
        k_offsets=segment_offsets(k_segments, k_base),
        v_offsets=segment_offsets(v_segments, v_base),
        blocks_per_segment=shape[0],
        block_size=shape[1],
        num_kv_heads=shape[2],
        head_dim=shape[3],
    )


def values_transposed(dtype: torch.dtype) -> bool:
    """Whether a cache of this dtype stores V transposed per block (float8 e4m3, whose
    kernels/fp8.py FP8_DTYPE this is)."""
    return dtype == torch.float8_e4m3fn


def value_shape(key_shape: tuple[int, ...], dtype: torch.dtype) -> tuple[int, ...]:
    """The shape of a V segment beside a K segment of key_shape [blocks_per_segment,
    block_size, kv_heads, head_dim]."""
    if not values_transposed(dtype):
        return tuple(key_shape)
    blocks, block_size, heads, dim = key_shape
    return blocks, heads, dim, block_size


def value_tokens(v: torch.Tensor, transposed: bool) -> torch.Tensor:
    """A V segment (or a stack of them along leading axes) as [..., blocks_per_segment,
    block_size, kv_heads, head_dim]: a view, permuted back where stored transposed."""
    if not transposed:
        return v
    lead = list(range(v.dim() - 4))
    return v.permute(*lead, v.dim() - 4, v.dim() - 1, v.dim() - 3, v.dim() - 2)


def segment_offsets(segments: Sequence[torch.Tensor | None], base: torch.Tensor) -> torch.Tensor:
    """Each segment's start in ALIGN_BYTES units from base (signed; 0 for an unbacked id)."""
    offsets = []
    for seg, t in enumerate(segments):
        delta = 0 if t is None else t.data_ptr() - base.data_ptr()
        if delta % ALIGN_BYTES or (t is not None and t.data_ptr() % ALIGN_BYTES):
            raise KVLayoutError(f"segment {seg} is not {ALIGN_BYTES}-byte aligned")
        offsets.append(delta // ALIGN_BYTES)
    return torch.tensor(offsets, dtype=torch.int64, device=base.device)
