"""The memory operations a batch brings (harness.engine.batch), applied to the GPU executor's KV
pool: segments backed and released, block copies the allocator decided on, sequences swapped to
host memory and back (harness.gpu.swap), and the prefix cache's host-tier copies
(harness.gpu.host_tier), in the order Batch documents."""
from __future__ import annotations

import numpy as np
import torch

from allocators import BlockCopy, HostCopy
from harness.engine.batch import Batch, SwapOp
from harness.gpu.batching import slots_of
from harness.gpu.host_state import TableRows
from harness.gpu.host_tier import HostTierBlocks
from harness.gpu.kv_pool import KVPool
from harness.gpu.swap import SwapSpace


class MemoryOps:
    """One pool's memory operations, and the counts of what they moved."""

    def __init__(self, pool: KVPool, tables: TableRows, device: torch.device,
                 host_tier_blocks: int) -> None:
        self.pool = pool
        self._tables = tables  # a swapped-out sequence's row is dropped
        self._device = device
        self.swap = SwapSpace(device)
        self.host_tier = HostTierBlocks(host_tier_blocks, pool) if host_tier_blocks else None
        self.swaps = [0, 0]  # sequences swapped out, in
        self.copied_blocks = 0
        self.host_copied = [0, 0]  # blocks copied to the host tier, and back

    def apply(self, batch: Batch) -> None:
        """Segments, block copies, swaps and host-tier copies, in the order Batch documents."""
        self.pool.sync(batch.segments_added, [])
        # Swapped-out KV is read where the scheduler decided it among the block copies, before
        # the pool drops a released segment and before anything this step writes reuses it;
        # so are host-tier copies, after the swap-outs at their place.
        placed = sorted([(op.copies_before, 0, i) for i, op in enumerate(batch.swap_out)]
                        + [(op.copies_before, 1, i) for i, op in enumerate(batch.host_copies)])
        copied = 0
        for copies_before, kind, index in placed:
            self._copy(batch.block_copies[copied:copies_before])
            copied = copies_before
            if kind:
                self._host_copy(batch.host_copies[index])
            else:
                self._swap_out(batch.swap_out[index])
        self._copy(batch.block_copies[copied:])
        self.pool.sync([], batch.segments_released)
        for op in batch.swap_in:
            self._swap_in(op)

    def _copy(self, copies: list[BlockCopy]) -> None:
        """Apply block copies decided by the allocator (one gather and one scatter)."""
        if not copies:
            return
        bs = self.pool.block_size
        src = np.concatenate([c.src * bs + np.arange(c.num_tokens) for c in copies])
        dst = np.concatenate([c.dst * bs + np.arange(c.num_tokens) for c in copies])
        self.pool.write_slots(self.pool.index(dst), self.pool.read_slots(self.pool.index(src)))
        self.copied_blocks += len(copies)

    def _op_slots(self, op: SwapOp) -> np.ndarray:
        table = np.asarray(op.block_table, dtype=np.int64)
        return slots_of(table, np.arange(op.first_token, op.num_tokens), self.pool.block_size)

    def _swap_out(self, op: SwapOp) -> None:
        """Save a sequence's written KV (from its window start on) in the host swap space; its
        slots are the allocator's again."""
        self.swap.save(op.seq_id, self.pool.read_slots(self.pool.index(self._op_slots(op))))
        self._tables.drop(op.seq_id)
        self.swaps[0] += 1

    def _host_copy(self, op: HostCopy) -> None:
        if op.to_host:
            self.host_tier.offload(op.units, op.host_blocks)
        else:
            self.host_tier.restore(op.units, op.host_blocks)
        self.host_copied[not op.to_host] += len(op.units)

    def _swap_in(self, op: SwapOp) -> None:
        self.pool.write_slots(self.pool.index(self._op_slots(op)),
                              self.swap.load(op.seq_id, self._device))
        self.swaps[1] += 1
