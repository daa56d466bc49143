"""CUDA graphs for mixed steps (prefill chunks and decode rows) up to a token cap.

Outside a graph a step of the 8B model launches over a thousand kernels from Python, which
takes the host longer than the device needs for the whole step at a few hundred tokens: such
steps were bound by the host (the launch loop, not the GPU, set their time). Here every row of
the step is a query chunk of the paged prefill kernel (a decode row is a chunk of one token,
attending to its whole context), so the forward's launches depend on the padded token count
alone, and one graph per token bucket covers every mix of prefill and decode.

Padding: rows past the step's tokens write no KV (slot -1) and belong to no sequence, so no
attention output is written for them; every other operation works row by row, so whatever
they hold stays in their own rows. Sequences past the step's have no query tokens (their
programs return at once). The sampled rows are padded to a bucket too and point at row 0: one
per sequence, or as many as a verification of speculative drafts samples (every row of it)
where the trace speculates.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.gpu.batching import HostStep
from harness.gpu.host_state import round_width
from harness.gpu.kv_pool import KVPool, SlotIndex
from harness.gpu.model import Decoder, PrefillBatch, StepInputs

# Above this many tokens a step keeps the GPU busier than the host's launches (the GEMMs
# dominate), and padding to a bucket would cost GEMM work for nothing.
MAX_GRAPH_TOKENS = 2048


def token_buckets(max_tokens: int) -> list[int]:
    """Padded step sizes: powers of two to 64, then every 64 to 1024, then every 128. cuBLAS
    tiles the token dimension in 64- or 128-row tiles, so these cost about what the unpadded
    step costs."""
    sizes = [8, 16, 32] + list(range(64, 1025, 64)) + list(range(1152, max_tokens + 1, 128))
    return sorted({s for s in sizes if s < max_tokens} | {max_tokens})


@dataclass(frozen=True)
class UnifiedRows:
    """A laid-out step with every sequence as one query chunk: prefills first, then one row per
    decoding sequence. query_starts [S + 1], contexts [S] (KV length once written)."""

    query_starts: np.ndarray
    contexts: np.ndarray

    @classmethod
    def of(cls, host: HostStep) -> UnifiedRows:
        num_prefill = int(host.query_starts[-1])
        decode_ends = num_prefill + np.arange(1, len(host.decode_lens) + 1, dtype=np.int64)
        return cls(np.concatenate([host.query_starts, decode_ends]),
                   np.concatenate([host.prefill_contexts, host.decode_lens]))

    @property
    def num_seqs(self) -> int:
        return len(self.contexts)


class MixedBuffers:
    """Fixed device buffers of a padded mixed step, and the StepInputs that read them."""

    def __init__(self, *, max_tokens: int, max_seqs: int, width: int, device: torch.device,
                 max_sampled: int | None = None) -> None:
        self.max_tokens, self.max_seqs, self.width = max_tokens, max_seqs, width
        self.max_sampled = max_seqs if max_sampled is None else max_sampled
        pinned = device.type == "cuda"
        # Rows: token ids, positions, slot ids (tokens); sampled rows (sequences).
        self.rows = torch.zeros(3, max_tokens, dtype=torch.int64, device=device)
        self.logit_rows = torch.zeros(self.max_sampled, dtype=torch.int64, device=device)
        # query_starts [S + 1] at 0, contexts [S] from a 16-byte boundary (one specialisation).
        self._ctx_at = round_width(max_seqs + 1)
        self.seqs = torch.zeros(self._ctx_at + max_seqs, dtype=torch.int32, device=device)
        self.tables = torch.zeros(max_seqs, width, dtype=torch.int32, device=device)
        self._staging = torch.zeros(max_seqs * width, dtype=torch.int32, device=device)
        self._rows_host = torch.zeros(3, max_tokens, dtype=torch.int64, pin_memory=pinned)
        self._logit_host = torch.zeros(self.max_sampled, dtype=torch.int64, pin_memory=pinned)
        self._seqs_host = torch.zeros(self.seqs.numel(), dtype=torch.int32, pin_memory=pinned)
        self._tables_host = torch.zeros(max_seqs * width, dtype=torch.int32, pin_memory=pinned)

    def fits(self, host: HostStep, num_seqs: int) -> bool:
        return (len(host.ids) <= self.max_tokens and num_seqs <= self.max_seqs
                and len(host.logit_rows) <= self.max_sampled
                and host.tables.shape[1] <= self.width)

    def inputs(self, tokens: int) -> StepInputs:
        """The StepInputs of a step padded to `tokens` rows."""
        seqs = self.seqs
        return StepInputs(
            input_ids=self.rows[0, :tokens],
            positions=self.rows[1, :tokens],
            slot_mapping=SlotIndex(self.rows[2, :tokens], ()),
            prefills=(),
            num_prefill_tokens=tokens,
            block_tables=self.tables[:0],
            context_lens=seqs[:0],
            logit_rows=self.logit_rows[: min(tokens, self.max_sampled)],
            prefill_batch=PrefillBatch(
                query_starts=seqs[: self.max_seqs + 1],
                context_lens=seqs[self._ctx_at : self._ctx_at + self.max_seqs],
                block_tables=self.tables,
            ),
        )

    def clear(self) -> None:
        """Inputs that write nowhere, hold no query tokens and sample row 0: what a capture of
        any bucket may run on, whatever step was loaded before."""
        self.rows.zero_()
        self.rows[2].fill_(-1)
        self.logit_rows.zero_()
        self.seqs.zero_()

    def load(self, host: HostStep, unified: UnifiedRows, tokens: int) -> None:
        """Copy a step into the buffers, padded to `tokens` rows (three copies)."""
        t, s, width = len(host.ids), unified.num_seqs, host.tables.shape[1]
        rows = self._rows_host.numpy()
        rows[:, t:tokens] = 0
        rows[2, t:tokens] = -1
        rows[0, :t], rows[1, :t], rows[2, :t] = host.ids, host.positions, host.slots
        logit = self._logit_host.numpy()
        logit[:] = 0
        logit[: len(host.logit_rows)] = host.logit_rows
        seqs = self._seqs_host.numpy()
        seqs[: s + 1] = unified.query_starts
        seqs[s + 1 : self.max_seqs + 1] = t
        seqs[self._ctx_at : self._ctx_at + s] = unified.contexts
        seqs[self._ctx_at + s :] = 0
        flat = self._tables_host.numpy()[: s * width].reshape(s, width)
        flat[:] = host.tables
        self.rows[:, :tokens].copy_(self._rows_host[:, :tokens], non_blocking=True)
        self.logit_rows.copy_(self._logit_host, non_blocking=True)
        self.seqs.copy_(self._seqs_host, non_blocking=True)
        staged = self._staging[: s * width]
        staged.copy_(self._tables_host[: s * width], non_blocking=True)
        self.tables[:s, :width].copy_(staged.view(s, width))


class MixedGraphs:
    """Captured mixed-step forwards of one decoder over one pool, one per token bucket."""

    def __init__(self, decoder: Decoder, pool: KVPool, *, max_seqs: int, max_context: int,
                 max_tokens: int = MAX_GRAPH_TOKENS, max_sampled: int | None = None) -> None:
        self.decoder = decoder
        self.pool = pool
        self.buckets = token_buckets(max_tokens)
        width = round_width(-(-max_context // pool.block_size))
        self.buffers = MixedBuffers(max_tokens=max_tokens, max_seqs=max_seqs, width=width,
                                    device=decoder.weights.embed.device, max_sampled=max_sampled)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._mempool = torch.cuda.graph_pool_handle()
        self._handle = None
        self.captures = 0

    def fits(self, host: HostStep) -> bool:
        return self.buffers.fits(host, len(host.prefill_contexts) + len(host.decode_lens))

    def prepare(self, tokens: int) -> None:
        """Capture the bucket of this many tokens if needed (outside any timed region)."""
        handle = self.pool.layer(0).handle
        if handle is not self._handle:  # a rebuilt segment table: the graphs read the old one
            self._graphs.clear()
            self._handle = handle
        bucket = self._bucket(tokens)
        if bucket not in self._graphs:
            self._graphs[bucket] = self._capture(bucket)

    def run(self, host: HostStep) -> torch.Tensor:
        """Greedy next tokens of the step's sampled rows (prepare() first)."""
        bucket = self._bucket(len(host.ids))
        self.buffers.load(host, UnifiedRows.of(host), bucket)
        graph, tokens = self._graphs[bucket]
        graph.replay()
        return tokens[: len(host.logit_rows)]

    def _bucket(self, tokens: int) -> int:
        return next(b for b in self.buckets if b >= tokens)

    def _capture(self, bucket: int):
        """Warm the forward up on a side stream, then capture it; the inputs write nowhere and
        hold no query tokens."""
        self.buffers.clear()
        step = self.buffers.inputs(bucket)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.decoder.next_tokens(step, self.pool)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._mempool):
            tokens = self.decoder.next_tokens(step, self.pool)
        self.captures += 1
        return graph, tokens
