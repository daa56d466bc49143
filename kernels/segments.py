"""Segment tables: how the kernels reach KV spread over several segment tensors.

Segment s is a contiguous tensor [blocks_per_segment, block_size, num_kv_heads, head_dim] for K
and for V, except that a float8 cache stores V transposed in runs of value_run(block_size)
tokens (16 where the block size is a multiple of 16): [blocks_per_segment, block_size // run,
num_kv_heads, head_dim, run] (values_transposed). The decode and prefill kernels read V as the
P.V dot's second operand, whose reduction axis is the tokens: an 8-bit operand with its tokens
adjacent is read with vector loads, where one with its head_dim adjacent was read a byte at a
time, and one head's run is one contiguous stretch whatever the block size
(kernels/tl_helpers.py load_values_transposed). At block_size 1 (or any odd one) the run is one
token and the layout is K's. The kernels address a segment through offsets from one base
tensor per K and V (the first live segment): pointer arithmetic across allocations, which the
GPU and the Triton interpreter (raw host addresses of CPU tensors) both accept. Offsets are
stored in units of 16 bytes so that the compiler can prove 16-byte alignment and issue vector
loads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

ALIGN_BYTES = 16
VALUE_RUN = 16  # tokens a float8 cache stores V transposed in (value_run)


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
    """Whether a cache of this dtype stores V transposed in runs (float8 e4m3, whose
    kernels/fp8.py FP8_DTYPE this is)."""
    return dtype == torch.float8_e4m3fn


def value_run(block_size: int) -> int:
    """Tokens per run of a transposed V: the largest power of two up to VALUE_RUN that divides
    the block size, so that no run crosses a block."""
    return min(block_size & -block_size, VALUE_RUN)


def value_shape(key_shape: tuple[int, ...], dtype: torch.dtype) -> tuple[int, ...]:
    """The shape of a V segment beside a K segment of key_shape [blocks_per_segment,
    block_size, kv_heads, head_dim]."""
    if not values_transposed(dtype):
        return tuple(key_shape)
    blocks, block_size, heads, dim = key_shape
    run = value_run(block_size)
    return blocks, block_size // run, heads, dim, run


def value_runs(v: torch.Tensor) -> torch.Tensor:
    """Transposed V segments [..., blocks, runs, kv_heads, head_dim, run] as a view [...,
    blocks, runs, run, kv_heads, head_dim]: token t of a block is (t // run, t % run)."""
    n = v.dim()
    return v.permute(*range(n - 5), n - 5, n - 4, n - 1, n - 3, n - 2)


def stored_values(v: torch.Tensor) -> torch.Tensor:
    """Token-major V [blocks, block_size, kv_heads, head_dim] as a transposed cache stores it
    (a copy)."""
    blocks, block_size, heads, dim = v.shape
    run = value_run(block_size)
    return v.view(blocks, block_size // run, run, heads, dim).permute(0, 1, 3, 4, 2).contiguous()


def token_values(v: torch.Tensor) -> torch.Tensor:
    """Inverse of stored_values: [blocks, block_size, kv_heads, head_dim] (a copy)."""
    runs = value_runs(v)
    blocks, count, run, heads, dim = runs.shape
    return runs.reshape(blocks, count * run, heads, dim)


def segment_offsets(segments: Sequence[torch.Tensor | None], base: torch.Tensor) -> torch.Tensor:
    """Each segment's start in ALIGN_BYTES units from base (signed; 0 for an unbacked id)."""
    offsets = []
    for seg, t in enumerate(segments):
        delta = 0 if t is None else t.data_ptr() - base.data_ptr()
        if delta % ALIGN_BYTES or (t is not None and t.data_ptr() % ALIGN_BYTES):
            raise KVLayoutError(f"segment {seg} is not {ALIGN_BYTES}-byte aligned")
        offsets.append(delta // ALIGN_BYTES)
    return torch.tensor(offsets, dtype=torch.int64, device=base.device)
