"""KV tensors that follow the allocator's segments.

The allocator decides which segments exist and each batch says what changed; the pool mirrors
that in device memory: one tensor per live segment, [num_layers, 2 (K, V), blocks_per_segment,
block_size, num_kv_heads, head_dim], created when the allocator adds the segment and dropped when
it releases it. Static and paged
allocators hold one segment from the start (preallocated); segmented and hybrid add and release
segments as the load moves, so the real memory held follows the allocator's `backed` figure.
Every segment tensor has the full blocks_per_segment (the kernels want one shape), so a last
segment the budget cuts short is backed whole: a budget of whole segments avoids that.

Slots are the allocator's global slot ids: block b = slot // block_size lives in segment
b // blocks_per_segment. Per layer the kernels see a list indexed by segment id of
[blocks_per_segment, block_size, num_kv_heads, head_dim] views, None where no segment is live
(a float8 pool's V views are [blocks_per_segment, runs, num_kv_heads, head_dim, run]: V
transposed in runs of tokens, kernels/segments.py).

A float8 pool (kernels/fp8.py) stores K / scale and V / scale, with one float32 scale per layer
and KV head for each, held here for the pool's whole life: set_scales() overwrites their values
in place, so that captured CUDA graphs read the calibrated ones. The pool moves float8 data as
bytes, since torch indexes few float8 operations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from harness.engine.executor import KVGeometry
from kernels.fp8 import is_fp8
from kernels.segments import value_run, value_runs, value_shape, values_transposed

# prepare(k_segments, v_segments, previous) -> a kernel's per-layer segment handle
# (kernels.paged_decode's SegmentTable), called when the live segments change; previous is the
# layer's last handle (None the first time), which a backend may update in place so that
# captured CUDA graphs stay valid.
PrepareLayer = Callable[[list, list, object], object]


@dataclass(frozen=True)
class LayerCache:
    """One layer's segment views, indexed by segment id (None: not live), the kernel's
    handle on them, and a float8 pool's scales of this layer (float32 [num_kv_heads])."""

    k_segments: list
    v_segments: list
    handle: object | None
    k_scale: torch.Tensor | None = None
    v_scale: torch.Tensor | None = None


@dataclass(frozen=True)
class SlotIndex:
    """Global slot ids on the device, and per segment the local indices (and the rows of the
    slot list they serve, None when every slot is in that one segment)."""

    slots: torch.Tensor  # int64 [n]
    parts: tuple[tuple[int, torch.Tensor, torch.Tensor | None], ...]


class SegmentMismatch(RuntimeError):
    """Slots refer to a segment the pool holds no tensor for (sync() was not called after the
    batch added it)."""


class KVPool:
    """Device KV memory mirroring the allocator's segments, as the batches report them."""

    def __init__(
        self,
        geometry: KVGeometry,
        *,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
        prepare: PrepareLayer | None = None,
    ) -> None:
        self.budget_slots = geometry.budget_slots
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = torch.device(device)
        self.block_size = geometry.block_size
        self.blocks_per_segment = geometry.blocks_per_segment
        self.values_transposed = values_transposed(dtype)
        self._value_shape = value_shape(
            (self.blocks_per_segment, self.block_size, num_kv_heads, head_dim), dtype)
        self._run = value_run(self.block_size)  # a transposed V's slots: block, run, offset
        self._prepare = prepare
        self._tensors: dict[int, torch.Tensor] = {}
        self._layers: list[LayerCache] = []
        # [2 (K, V), num_layers, num_kv_heads]; 1 until set_scales() calibrates them.
        self.scales = torch.ones(2, num_layers, num_kv_heads, dtype=torch.float32,
                                 device=self.device) if is_fp8(dtype) else None

    @property
    def slots_per_segment(self) -> int:
        return self.blocks_per_segment * self.block_size

    @property
    def allocated_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors.values())

    def set_scales(self, k_scales: torch.Tensor, v_scales: torch.Tensor) -> None:
        """Overwrite a float8 pool's scales: float32 [num_layers, num_kv_heads] for K and V.
        KV already stored keeps the scales it was written with, so set them before any write."""
        if self.scales is None:
            raise ValueError(f"a {self.dtype} pool stores no scales")
        want = tuple(self.scales.shape[1:])
        for name, scales in (("k_scales", k_scales), ("v_scales", v_scales)):
            if tuple(scales.shape) != want:
                raise ValueError(f"{name} has shape {tuple(scales.shape)}, the pool needs {want}")
        self.scales[0].copy_(k_scales)
        self.scales[1].copy_(v_scales)

    def sync(self, added: list[int], released: list[int]) -> bool:
        """Drop the tensors of released segments, create those of added ones (either may be
        known already: nothing happens then); True when anything changed. Data in surviving
        segments is untouched."""
        gone = [s for s in released if s in self._tensors]
        new = [s for s in added if s not in self._tensors]
        for seg in gone:
            del self._tensors[seg]
        for seg in new:
            self._tensors[seg] = torch.empty(
                self.num_layers, 2, self.blocks_per_segment, self.block_size, self.num_kv_heads, self.head_dim,
                dtype=self.dtype, device=self.device,
            )
        if gone or new:
            self._rebuild_views()
        return bool(gone or new)

    def _rebuild_views(self) -> None:
        # Lists as long as the most segments the budget allows, so their length (and a
        # kernel's segment table) keeps one size for the whole run.
        count = max(self._max_segments(), max(self._tensors, default=-1) + 1)
        previous = self._layers or [None] * self.num_layers
        self._layers = []
        for layer in range(self.num_layers):
            k: list[torch.Tensor | None] = [None] * count
            v: list[torch.Tensor | None] = [None] * count
            for seg, t in self._tensors.items():
                k[seg], v[seg] = t[layer, 0], t[layer, 1].view(self._value_shape)
            handle = previous[layer].handle if previous[layer] is not None else None
            if self._prepare and self._tensors:
                handle = self._prepare(k, v, handle)
            scales = (None, None) if self.scales is None else self.scales[:, layer]
            self._layers.append(LayerCache(k, v, handle, *scales))

    def _max_segments(self) -> int:
        return -(-self.budget_slots // self.slots_per_segment)

    def live_segments(self) -> list[int]:
        return sorted(self._tensors)

    def layer(self, layer: int) -> LayerCache:
        return self._layers[layer]

    def index(self, slots: np.ndarray, *, by_segment: bool = True) -> SlotIndex:
        """Split host slot ids by segment once, so every layer reuses the device indices; a
        kernel that reads the segment table itself needs no split (by_segment=False: parts
        is empty)."""
        slots = np.asarray(slots, dtype=np.int64)
        device_slots = torch.from_numpy(slots).to(self.device, non_blocking=True)
        sps = self.slots_per_segment
        seg_of = slots // sps
        if not by_segment:
            live = np.zeros(max(self._tensors, default=-1) + 1, dtype=bool)
            live[list(self._tensors)] = True
            if seg_of.size and (seg_of.max() >= live.size or not live[seg_of].all()):
                self._missing(np.unique(seg_of))
            return SlotIndex(device_slots, ())
        found = np.unique(seg_of)
        self._missing(found)
        if found.size == 1:
            seg = int(found[0])
            return SlotIndex(device_slots, ((seg, device_slots - seg * sps, None),))
        parts = []
        for seg in found.tolist():
            rows = np.flatnonzero(seg_of == seg)
            local = torch.from_numpy(slots[rows] - seg * sps).to(self.device, non_blocking=True)
            parts.append((seg, local, torch.from_numpy(rows).to(self.device, non_blocking=True)))
        return SlotIndex(device_slots, tuple(parts))

    def _missing(self, found: np.ndarray) -> None:
        missing = [int(s) for s in found if int(s) not in self._tensors]
        if missing:
            raise SegmentMismatch(f"slots reference segments {missing} with no tensor behind them")

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, where: SlotIndex) -> None:
        """Store one layer's K/V rows [n, Hkv, D], in the pool's dtype, at the slots of `where`
        (torch indexing; a GPU backend writes with kernels.kv_write instead)."""
        k, v = _raw(k), _raw(v)
        for seg, local, rows in where.parts:
            keys, values = self._tokens(seg)
            keys[layer, local] = k if rows is None else k[rows]
            values[(layer, *self._value_index(local))] = v if rows is None else v[rows]

    def gather(self, layer: int, where: SlotIndex) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer's K and V at the slots of `where`, [n, Hkv, D] each, in slot order."""
        k = self._raw_empty(where.slots.numel(), self.num_kv_heads, self.head_dim)
        v = torch.empty_like(k)
        for seg, local, rows in where.parts:
            keys, values = self._tokens(seg)
            rows = slice(None) if rows is None else rows
            k[rows], v[rows] = keys[layer, local], values[(layer, *self._value_index(local))]
        return k.view(self.dtype), v.view(self.dtype)

    def read_slots(self, where: SlotIndex) -> torch.Tensor:
        """Every layer's K and V at the slots: [num_layers, 2, n, Hkv, D] (swap-out, fork)."""
        if len(where.parts) == 1:
            return self._slot_data(*where.parts[0][:2]).view(self.dtype)
        out = self._raw_empty(self.num_layers, 2, where.slots.numel(), self.num_kv_heads,
                              self.head_dim)
        for seg, local, rows in where.parts:
            out[:, :, rows] = self._slot_data(seg, local)
        return out.view(self.dtype)

    def write_slots(self, where: SlotIndex, data: torch.Tensor) -> None:
        """Inverse of read_slots: data [num_layers, 2, n, Hkv, D] on the pool's device."""
        data = _raw(data)
        for seg, local, rows in where.parts:
            part = data if rows is None else data[:, :, rows]
            if self.values_transposed:
                keys, values = self._tokens(seg)
                keys[:, local] = part[:, 0]
                values[(slice(None), *self._value_index(local))] = part[:, 1]
            else:
                self._flat(seg)[:, :, local] = part

    def _slot_data(self, seg: int, local: torch.Tensor) -> torch.Tensor:
        """Every layer's K and V at segment-local slots, [num_layers, 2, m, Hkv, D] (float8 as
        bytes): one gather of both where they share a layout (gathered apart and copied, the host
        tier's contiguous copies of 1,024 tokens and more took 4-13% longer on an H200,
        benchmarks/results/host_tier_h200.csv's note)."""
        if self.values_transposed:
            keys, values = self._tokens(seg)
            return torch.stack((keys[:, local],
                                values[(slice(None), *self._value_index(local))]), 1)
        return self._flat(seg)[:, :, local]

    def _raw_empty(self, *shape: int) -> torch.Tensor:
        """An uninitialised tensor of the pool's dtype (float8 as bytes) on its device."""
        return torch.empty(shape, dtype=torch.uint8 if is_fp8(self.dtype) else self.dtype,
                           device=self.device)

    def _tokens(self, seg: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A segment's K and V as views [num_layers, slots, Hkv, D], float8 as bytes; a V
        stored transposed as [num_layers, blocks_per_segment, runs, run, Hkv, D]
        (kernels/segments.py value_runs), indexed by _value_index."""
        flat = self._flat(seg)
        if self.values_transposed:
            return flat[:, 0], value_runs(flat[:, 1].view(self.num_layers, *self._value_shape))
        return flat[:, 0], flat[:, 1]

    def _flat(self, seg: int) -> torch.Tensor:
        """A segment as [num_layers, 2, slots, Hkv, D], float8 as bytes: K's layout, and V's
        unless it is stored transposed."""
        return _raw(self._tensors[seg]).view(self.num_layers, 2, -1, self.num_kv_heads,
                                             self.head_dim)

    def _value_index(self, local: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Where _tokens' V view holds segment-local slots: the slots themselves, or (block in
        segment, run in block, offset in run) where V is stored transposed."""
        if not self.values_transposed:
            return (local,)
        offset = local % self.block_size
        return local // self.block_size, offset // self._run, offset % self._run


def _raw(t: torch.Tensor) -> torch.Tensor:
    """Float8 data as its bytes (same shape), for torch's indexing; other dtypes as they are."""
    return t.view(torch.uint8) if is_fp8(t.dtype) else t

