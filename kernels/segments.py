"""Segment tables: how the kernels reach KV spread over several segment tensors.

Segment s is a contiguous tensor [blocks_per_segment, block_size, num_kv_heads, head_dim]. The
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
    for k, v in live:
        for t in (k, v):
            if t is None or tuple(t.shape) != shape or t.dtype != k_base.dtype:
                raise KVLayoutError(f"every live segment needs K and V of shape {shape}, "
                                    f"dtype {k_base.dtype}")
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


def segment_offsets(segments: Sequence[torch.Tensor | None], base: torch.Tensor) -> torch.Tensor:
    """Each segment's start in ALIGN_BYTES units from base (signed; 0 for an unbacked id)."""
    offsets = []
    for seg, t in enumerate(segments):
        delta = 0 if t is None else t.data_ptr() - base.data_ptr()
        if delta % ALIGN_BYTES or (t is not None and t.data_ptr() % ALIGN_BYTES):
            raise KVLayoutError(f"segment {seg} is not {ALIGN_BYTES}-byte aligned")
        offsets.append(delta // ALIGN_BYTES)
    return torch.tensor(offsets, dtype=torch.int64, device=base.device)
