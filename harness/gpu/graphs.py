"""CUDA graphs for decode-only steps: one captured forward per batch-size bucket.

A decode step of a large model launches a few dozen kernels per layer; from Python each launch
costs more host time than the device spends on it at small and medium batches, so an eager
decode step is bound by the host. Capturing the whole decode forward (every layer, the paged
decode kernel included, and the greedy argmax) per padded batch size and replaying it leaves
the device busy back to back, as serving engines do.

Inputs live in fixed device buffers: token ids, positions, slot ids and context lengths in one
int64 block, the block tables in an int32 block of a fixed width (the longest sequence the
trace can produce). Only the columns the step's longest sequence uses travel: they go to a
staging buffer in one copy and into the fixed block on the device (a page-1 allocator's
tables are long). Padding rows write nowhere (slot -1) and attend to nothing (length 0).
The graphs bake in the addresses of the KV pool's segment tables, which the Triton backend
updates in place, so segments may come and go between replays; a new table object (the pool
went empty and was rebuilt) makes them recapture.
"""
from __future__ import annotations

import numpy as np
import torch

from harness.gpu.batching import DecodeWork
from harness.gpu.host_state import round_width
from harness.gpu.kv_pool import KVPool, SlotIndex
from harness.gpu.model import Decoder, StepInputs


def batch_buckets(max_batch: int) -> list[int]:
    """Padded batch sizes: 1, 2, 4, 8, then every 16 up to max_batch (vLLM's capture sizes)."""
    sizes = [b for b in (1, 2, 4, 8) if b < max_batch]
    sizes += list(range(16, max_batch, 16))
    return sizes + [max_batch]


class DecodeGraphs:
    """Captured decode forwards of one decoder over one pool, replayed for decode-only steps."""

    def __init__(self, decoder: Decoder, pool: KVPool, *, max_batch: int, max_context: int):
        self.decoder = decoder
        self.pool = pool
        self.max_batch = max_batch
        self.width = round_width(-(-max_context // pool.block_size))
        self.buckets = batch_buckets(max_batch)
        device = decoder.weights.embed.device
        # Rows: token ids, positions, slot ids, context lengths.
        self._meta = torch.zeros(4, max_batch, dtype=torch.int64, device=device)
        self._tables = torch.zeros(max_batch, self.width, dtype=torch.int32, device=device)
        self._staging = torch.zeros(max_batch * self.width, dtype=torch.int32, device=device)
        self._meta_host = torch.zeros(4, max_batch, dtype=torch.int64).pin_memory()
        self._tables_host = torch.zeros(max_batch * self.width, dtype=torch.int32).pin_memory()
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._mempool = torch.cuda.graph_pool_handle()
        self._handle = None
        self.captures = 0

    def fits(self, decode: DecodeWork) -> bool:
        return len(decode.seq_ids) <= self.max_batch and int(decode.context_lens.max()) <= \
            self.width * self.pool.block_size

    def prepare(self, batch: int) -> None:
        """Capture the bucket of this batch size if needed (outside any timed region)."""
        handle = self.pool.layer(0).handle
        if handle is not self._handle:
            self._graphs.clear()
            self._handle = handle
        bucket = self._bucket(batch)
        if bucket not in self._graphs:
            self._graphs[bucket] = self._capture(bucket)

    def run(self, decode: DecodeWork, tables: np.ndarray) -> torch.Tensor:
        """Greedy next tokens [B] of a decode-only step (prepare() first); tables: [B, W]
        int32 block tables, W <= self.width."""
        b = len(decode.seq_ids)
        bucket = self._bucket(b)
        width = tables.shape[1]
        meta = self._meta_host.numpy()
        meta[:, b:bucket] = 0
        meta[2, b:bucket] = -1
        lens = decode.context_lens
        bs = self.pool.block_size
        last = lens - 1
        meta[0, :b] = decode.tokens
        meta[1, :b] = last
        meta[2, :b] = tables[np.arange(b), last // bs].astype(np.int64) * bs + last % bs
        meta[3, :b] = lens
        flat = self._tables_host.numpy()[: b * width].reshape(b, width)
        flat[:] = tables
        self._meta[:, :bucket].copy_(self._meta_host[:, :bucket], non_blocking=True)
        staged = self._staging[: b * width]
        staged.copy_(self._tables_host[: b * width], non_blocking=True)
        self._tables[:b, :width].copy_(staged.view(b, width))
        graph, tokens = self._graphs[bucket]
        graph.replay()
        return tokens[:b]

    def _bucket(self, batch: int) -> int:
        return next(b for b in self.buckets if b >= batch)

    def _step(self, bucket: int) -> StepInputs:
        meta = self._meta
        return StepInputs(
            input_ids=meta[0, :bucket],
            positions=meta[1, :bucket],
            slot_mapping=SlotIndex(meta[2, :bucket], ()),
            prefills=(),
            num_prefill_tokens=0,
            block_tables=self._tables[:bucket],
            context_lens=meta[3, :bucket].to(torch.int32),
            logit_rows=torch.arange(bucket, device=meta.device),
        )

    def _capture(self, bucket: int):
        """Warm the forward up on a side stream, then capture it; inputs write nowhere."""
        self._meta.zero_()
        self._meta[2].fill_(-1)
        self._tables.zero_()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.decoder.next_tokens(self._step(bucket), self.pool)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._mempool):
            tokens = self.decoder.next_tokens(self._step(bucket), self.pool)
        self.captures += 1
        return graph, tokens
