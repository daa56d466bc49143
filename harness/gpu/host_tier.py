"""The prefix cache's host tier on the device: its blocks in pinned host memory, and the copies.

The allocator decides which host block holds which prefix block (allocators.host_tier); each
batch brings the copies it decided (allocators.HostCopy), which this performs on the current
stream: an offload reads the pool's blocks before anything later in the stream writes them, a
restore writes them before the step's forward reads them. Host blocks are laid out
[num_blocks, num_layers, 2 (K, V), block_size, num_kv_heads, head_dim], so that every block is
one contiguous range of pinned memory and a run of consecutive host blocks moves in one DMA
copy; the pool's blocks are gathered into (or scattered from) one contiguous device buffer of
the same layout on the device side.

A restore writes KV, never a block-table entry: its blocks are fresh ones of a sequence the
allocator has just allocated, whose table the executor's TableRows writes whole when a step
first schedules it, so the device's copy of the tables (device_tables.py) takes them with that
step's changed entries, before the forward that reads them. Blocks a slide let go, waiting in
the prefix cache's LRU, keep their KV until an eviction offloads them.
"""
from __future__ import annotations

import numpy as np
import torch

from harness.gpu.kv_pool import KVPool


def block_runs(blocks: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, stop, first block) of each run of consecutive block ids: blocks[start:stop] are
    first, first + 1, ..."""
    breaks = np.flatnonzero(np.diff(blocks) != 1) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [len(blocks)]))
    return [(int(a), int(b), int(blocks[a])) for a, b in zip(starts, stops)]


class HostTierBlocks:
    """Pinned host memory (plain on a CPU) for the host tier's blocks of one KV pool."""

    def __init__(self, num_blocks: int, pool: KVPool) -> None:
        self.pool = pool
        self.blocks = torch.empty(
            num_blocks, pool.num_layers, 2, pool.block_size, pool.num_kv_heads, pool.head_dim,
            dtype=pool.dtype, pin_memory=pool.device.type == "cuda")

    @property
    def allocated_bytes(self) -> int:
        return self.blocks.numel() * self.blocks.element_size()

    def _slots(self, units: tuple[int, ...]) -> np.ndarray:
        bs = self.pool.block_size
        return (np.asarray(units, dtype=np.int64)[:, None] * bs + np.arange(bs)).ravel()

    def offload(self, units: tuple[int, ...], host_blocks: tuple[int, ...]) -> None:
        """Copy the pool's blocks units[i] into host block host_blocks[i]."""
        pool = self.pool
        data = pool.read_slots(pool.index(self._slots(units)))  # [L, 2, n * bs, Hkv, D]
        data = data.unflatten(2, (len(units), pool.block_size)).permute(2, 0, 1, 3, 4, 5)
        data = data.contiguous()
        for start, stop, first in block_runs(np.asarray(host_blocks, dtype=np.int64)):
            self.blocks[first : first + stop - start].copy_(data[start:stop], non_blocking=True)

    def restore(self, units: tuple[int, ...], host_blocks: tuple[int, ...]) -> None:
        """Copy host block host_blocks[i] into the pool's block units[i]."""
        pool = self.pool
        data = torch.empty((len(units), *self.blocks.shape[1:]), dtype=pool.dtype,
                           device=pool.device)
        for start, stop, first in block_runs(np.asarray(host_blocks, dtype=np.int64)):
            data[start:stop].copy_(self.blocks[first : first + stop - start], non_blocking=True)
        pool.write_slots(pool.index(self._slots(units)),
                         data.permute(1, 2, 0, 3, 4, 5).flatten(2, 3))
