"""CUDA graphs for decode-only steps: one captured forward per batch-size bucket.

A decode step of a large model launches a few dozen kernels per layer; from Python each launch
costs more host time than the device spends on it at small and medium batches, so an eager
decode step is bound by the host. Capturing the whole decode forward (every layer, the paged
decode kernel included, and the greedy argmax) per padded batch size and replaying it leaves
the device busy back to back, as serving engines do.

Inputs live in fixed device buffers: token ids, positions, slot ids, context lengths and the
sequences' rows of the executor's block tables in one int64 block, which travels in one copy;
the block tables, an int32 block of a fixed width (the longest sequence the trace can produce),
are gathered on the device from the executor's copy (harness/gpu/device_tables.py), so no
table crosses PCIe. A step is staged on the host first (stage(), before the timed region), then
run. Padding rows write nowhere (slot -1) and attend to nothing (length 0). The graph holds the
whole device part of a step: the executor's table changes applied, the copies out of the
pinned staging buffers (whose addresses stay fixed), the gathers and the forward, so running a
step is one replay and the GPU does not wait for the host between those calls. Where the backend
decodes balanced (Decoder.work_list_plan) a step the plan applies to carries its decode work list
too, in a buffer of its own (fixed shapes per bucket, new contents every replay), and replays
the bucket's graph captured with balanced decode.
The graphs bake in the addresses of the KV pool's segment tables, which the Triton backend
updates in place, so segments may come and go between replays; a new table object (the pool
went empty and was rebuilt) makes them recapture.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch

from harness.gpu.batching import DecodeWork, table_slots
from harness.gpu.device_tables import DeviceTables
from harness.gpu.host_state import round_width
from harness.gpu.kv_pool import KVPool, SlotIndex
from harness.gpu.model import Decoder, StepInputs
from kernels.work_list import DecodeWorkList


def capture(forward: Callable[[], torch.Tensor], mempool) -> tuple[torch.cuda.CUDAGraph,
                                                                   torch.Tensor]:
    """forward warmed up on a side stream, then captured into a graph on mempool (None: a pool
    of its own) and replayed once; returns the graph and the tensor its replays write forward's
    result into. The replay is part of the capture because a graph's first launch also uploads
    it to the device, which for a model's hundreds of nodes takes the host far longer than a
    later launch: left to the first step that replays the graph, it would be timed as that
    step's work. forward runs three times here, so it must be repeatable: a step's inputs must
    write nowhere (empty_staging)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        forward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=mempool):
        out = forward()
    graph.replay()
    return graph, out


class GraphSet:
    """Captured graphs by key (graphs[key]: the graph and the output its replays write), on a
    memory pool of the set's own. The graphs hold the addresses of the KV pool's segment tables
    and of the device block tables' array: when either changes (a rebuilt segment table, a grown
    array), every graph is dropped and the set starts again on a new memory pool. A new one,
    since dropped graphs may leave tensors allocated in their pool still referenced (a graph's
    output, for one): torch then keeps that pool with no graph using it, and a capture into it
    again fails an internal assertion of its caching allocator (torch 2.11)."""

    def __init__(self, pool: KVPool, tables: DeviceTables) -> None:
        self.pool = pool
        self.tables = tables
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.mempool = None  # with the first graph
        self._handles = None

    def prepare(self, key: tuple, capture_key: Callable[..., tuple]) -> None:
        """graphs[key], captured by capture_key(*key) (onto mempool) unless the set holds it."""
        handles = (self.pool.layer(0).handle, self.tables.generation)
        if handles != self._handles:
            self.graphs.clear()
            self.mempool = torch.cuda.graph_pool_handle()
            self._handles = handles
        if key not in self.graphs:
            self.graphs[key] = capture_key(*key)


@contextmanager
def empty_staging(buffers: tuple[torch.Tensor, ...], slots: torch.Tensor,
                  device: torch.device):
    """Pinned staging buffers that hold an empty step inside (zeros, and -1 in slots, a view of
    one of them: writes nowhere, attends to nothing), what they held after: a capture runs
    the forward it holds on them. The copies out of them to device are waited for before they
    are refilled."""
    held = [buffer.clone() for buffer in buffers]
    for buffer in buffers:
        buffer.zero_()
    slots.fill_(-1)
    try:
        yield
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        for buffer, was in zip(buffers, held):
            buffer.copy_(was)


def batch_buckets(max_batch: int) -> list[int]:
    """Padded batch sizes: 1, 2, 4, 8, then every 16 up to max_batch (vLLM's capture sizes)."""
    sizes = [b for b in (1, 2, 4, 8) if b < max_batch]
    sizes += list(range(16, max_batch, 16))
    return sizes + [max_batch]


class DecodeGraphs:
    """Captured decode forwards of one decoder over one pool, replayed for decode-only steps."""

    def __init__(self, decoder: Decoder, pool: KVPool, tables: DeviceTables, *, max_batch: int,
                 max_context: int):
        self.decoder = decoder
        self.pool = pool
        self.tables = tables
        self.max_batch = max_batch
        self.width = round_width(-(-max_context // pool.block_size))
        self.buckets = batch_buckets(max_batch)
        device = decoder.weights.embed.device
        # Rows: token ids, positions, slot ids, context lengths, rows of the block tables.
        self._meta = torch.zeros(5, max_batch, dtype=torch.int64, device=device)
        self._tables = torch.zeros(max_batch, self.width, dtype=torch.int32, device=device)
        self._meta_host = torch.zeros(5, max_batch, dtype=torch.int64).pin_memory()
        # The decode rows' work list, where the backend decodes balanced: the bucket's list at
        # the start of one buffer, rebuilt every step.
        self.work_plan = decoder.work_list_plan(pool)
        work_size = 0 if self.work_plan is None else self.work_plan.size(max_batch)
        self._work = torch.zeros(work_size, dtype=torch.int32, device=device)
        self._work_host = torch.zeros(work_size, dtype=torch.int32).pin_memory()
        self._staged = (0, 0, False)  # batch, bucket, over a work list
        self._set = GraphSet(pool, tables)  # by (bucket, balanced)
        self.captures = 0

    def fits(self, decode: DecodeWork) -> bool:
        return len(decode.seq_ids) <= self.max_batch and int(decode.context_lens.max()) <= \
            self.width * self.pool.block_size

    def prepare(self) -> None:
        """Capture the staged step's graph if needed (outside any timed region)."""
        self._set.prepare(self._staged[1:], self._capture)

    def stage(self, decode: DecodeWork, table_rows: np.ndarray, tables: np.ndarray,
              balanced: bool = False) -> None:
        """The host part of a decode-only step: its inputs into the pinned staging buffer.
        table_rows: each sequence's row of tables (the executor's TableRows.array); balanced:
        over a work list (work_plan's, which the step's rows apply to)."""
        b = len(decode.seq_ids)
        bucket = self._bucket(b)
        meta = self._meta_host.numpy()
        meta[:, b:bucket] = 0
        meta[2, b:bucket] = -1
        lens = decode.context_lens
        bs = self.pool.block_size
        last = lens - 1
        meta[0, :b] = decode.tokens
        meta[1, :b] = last
        meta[2, :b] = table_slots(tables, table_rows, last, bs)
        meta[3, :b] = lens
        meta[4, :b] = table_rows
        if balanced:
            self.work_plan.build(meta[3, :bucket], out=self._work_host.numpy())
        self._staged = (b, bucket, balanced)

    def run(self) -> torch.Tensor:
        """The device part of the staged step (prepare() first; the executor's tables synced
        but for apply(), which the graph holds): greedy next tokens [B]."""
        b, bucket, balanced = self._staged
        graph, tokens = self._set.graphs[bucket, balanced]
        graph.replay()
        return tokens[:b]

    def _forward(self, bucket: int, balanced: bool) -> torch.Tensor:
        """What a bucket's graph holds: the staged inputs to the device, the forward."""
        self.tables.apply()
        # Whole: a column slice is not contiguous, and would go through unpinned memory.
        self._meta.copy_(self._meta_host, non_blocking=True)
        if balanced:
            n = self.work_plan.size(bucket)
            self._work[:n].copy_(self._work_host[:n], non_blocking=True)
        # Padding rows gather row 0's table, which they never read (length 0).
        self.tables.gather(self._meta[4, :bucket], self.width, out=self._tables[:bucket])
        return self.decoder.next_tokens(self._step(bucket, balanced), self.pool)

    def empty_staging(self):
        """The staging buffers hold an empty step inside (graphs.empty_staging; an empty work
        list: no row attends to anything)."""
        return empty_staging((self._meta_host, self._work_host), self._meta_host[2],
                             self._meta.device)

    def _bucket(self, batch: int) -> int:
        return next(b for b in self.buckets if b >= batch)

    def _step(self, bucket: int, balanced: bool) -> StepInputs:
        meta = self._meta
        return StepInputs(
            input_ids=meta[0, :bucket],
            positions=meta[1, :bucket],
            slot_mapping=SlotIndex(meta[2, :bucket], ()),
            prefills=(),
            num_decode_rows=bucket,
            block_tables=self._tables[:bucket],
            context_lens=meta[3, :bucket].to(torch.int32),
            logit_rows=torch.arange(bucket, device=meta.device),
            decode_work=DecodeWorkList(self.work_plan, bucket,
                                       self._work[: self.work_plan.size(bucket)])
            if balanced else None,
        )

    def _capture(self, bucket: int, balanced: bool):
        """The bucket's forward captured (graphs.capture) over an empty step."""
        self.captures += 1
        with self.empty_staging():
            return capture(lambda: self._forward(bucket, balanced), self._set.mempool)
