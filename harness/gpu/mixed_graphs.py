"""CUDA graphs for mixed steps (prefill chunks and decode rows) up to a token cap.

Outside a graph a step of the 8B model launches over a thousand kernels from Python, which
takes the host longer than the device needs for the whole step at a few hundred tokens: such
steps were bound by the host (the launch loop, not the GPU, set their time). A graph is captured
per padded token count, padded decode-row count and padded prefill-sequence count (the prefill
launch's grid bound grows with its sequences, and a tight one leaves a small step's grid small
enough for paged_prefill to split its keys), and holds the forward of the eager step:
one split-KV paged decode launch for the decode rows, one paged prefill launch for the chunks.
(Running a decode row as a one-token prefill chunk instead, which would need no decode-row
count, reads its context unsplit, one program per sequence and KV head, far below the decode
kernel's bandwidth.)

Layout of a step of P prefill tokens and D decode rows padded to T rows with Db >= D decode
rows: prefill rows 0..P-1, padding, decode rows T-D..T-1. Decode attention covers the last Db
rows; the first Db - D of them are padding of context length 0 (they get zeros). T is chosen
so that P + Db <= T: decode and prefill attention write disjoint rows, so the decoder may run
them side by side (harness/gpu/model.py). Padding rows write no KV (slot -1); prefill
sequences past the step's have no query tokens, so their programs return at once. Decode and
prefill sequences have their own block tables and lengths, each gathered on the device from the
executor's tables (harness/gpu/device_tables.py); where the backend decodes balanced and its
plan applies to the step's decode rows, their work list (built for the padded rows) travels
with their lengths, into a graph captured with balanced decode. As a decode graph does
(harness/gpu/graphs.py), a mixed graph holds the step's whole device part: the table changes
applied, the copies out of the pinned staging buffers, the gathers and the forward.
Sampled rows are padded too and point at row 0: one per sequence, or as many as a verification
of speculative drafts samples (every row of it, a chunk among the prefill rows) where the trace
speculates.
"""
from __future__ import annotations

import weakref

import numpy as np
import torch
import torch.nn.functional as F

from harness.gpu.batching import HostStep
from harness.gpu.device_tables import DeviceTables
from harness.gpu.graphs import GraphSet, capture, empty_staging
from harness.gpu.host_state import round_width
from harness.gpu.kv_pool import KVPool, SlotIndex
from harness.gpu.model import Decoder, PrefillBatch, StepInputs
from harness.gpu.timing import median_s
from kernels.work_list import DecodeWorkList, WorkListPlan

# Above this many tokens a step keeps the GPU busier than the host's launches (the GEMMs
# dominate), and padding to a bucket would cost GEMM work for nothing.
MAX_GRAPH_TOKENS = 2048
# Candidate padded step sizes: powers of two to 128, then every BUCKET_STEP tokens.
BUCKET_STEP = 16
# measured_token_buckets' results, by decoder and then by token cap.
_MEASURED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_buckets(max_tokens: int, step: int = 128) -> list[int]:
    """Padded step sizes: powers of two to 128, then every `step` tokens, and max_tokens."""
    sizes = [8, 16, 32, 64, 128] + list(range(128 + step, max_tokens + 1, step))
    return sorted({s for s in sizes if s < max_tokens} | {max_tokens})


def measured_token_buckets(decoder: Decoder, max_tokens: int) -> list[int]:
    """The candidate sizes (token_buckets every BUCKET_STEP) at which the decoder's dense layers
    (one layer's four projections, F.linear as the forward runs them; median of 5,
    harness.gpu.timing) take less time than at every larger candidate: a step pads to the next
    of those. From a few hundred tokens on the GEMMs are bound by arithmetic and their time
    grows with the tokens, so a coarse bucket pads a step with work it pays for; but cuBLAS's
    choice of kernel is not monotone in the token count (benchmarks/probe_steps.py's
    linear-layer grid on an H200 is slower at 448 tokens than at 512), so a size is kept only
    where it beats every larger one. Under tensor parallelism the ranks' times are summed (an
    all-reduce), so every rank pads to the same sizes and their collectives match. Measured
    once per decoder and cap: every executor of a decoder (a benchmark's allocators, one after
    another) pads alike."""
    known = _MEASURED.setdefault(decoder, {})
    if max_tokens not in known:
        known[max_tokens] = _measure_buckets(decoder, max_tokens)
    return known[max_tokens]


def _measure_buckets(decoder: Decoder, max_tokens: int) -> list[int]:
    candidates = token_buckets(max_tokens, BUCKET_STEP)
    layer = decoder.weights.layers[0]
    weights = (layer.qkv, layer.o, layer.gate_up, layer.down)
    inputs = {w.shape[1]: torch.randn(max_tokens, w.shape[1], device=w.device, dtype=w.dtype)
              for w in weights}
    times = []
    for tokens in candidates:
        def dense() -> None:
            for w in weights:
                F.linear(inputs[w.shape[1]][:tokens], w)

        times.append(median_s(dense, layer.qkv.device))
    summed = decoder.tp.all_reduce(torch.tensor(times, device=layer.qkv.device)).tolist()
    return faster_than_larger(candidates, summed)


def faster_than_larger(sizes: list[int], seconds: list[float]) -> list[int]:
    """The sizes (ascending) whose time is below that of every larger size, and the largest."""
    kept, best = [], float("inf")
    for size, time_s in reversed(list(zip(sizes, seconds))):
        if time_s < best:
            kept.append(size)
            best = time_s
    return sorted(kept)


def seq_buckets(max_seqs: int) -> list[int]:
    """Padded counts of decode rows and of prefill sequences: powers of two, then max_seqs.
    The attention kernels' split counts are chosen for the padded counts, so each bucket keeps
    them within a factor of two of the step's."""
    sizes = [1 << i for i in range(max_seqs.bit_length()) if 1 << i < max_seqs]
    return sizes + [max_seqs]


def _bucket(buckets: list[int], size: int) -> int:
    return next(b for b in buckets if b >= size)


def padded_sizes(token_buckets: list[int], seq_buckets: list[int], prefill_tokens: int,
                 decode_rows: int, prefill_seqs: int) -> tuple[int, int, int]:
    """(padded tokens, padded decode rows, padded prefill sequences) of a step: decode rows
    and prefill sequences to their buckets (prefill sequences at least one, so that the
    prefill launch always has a sequence to bound its grid by), tokens to the bucket that holds
    the prefill rows and the padded decode rows both (the last bucket, the cap, holds every
    step that fits: there the decode rows pad only into the room the prefill rows leave)."""
    rows = _bucket(seq_buckets, decode_rows) if decode_rows else 0
    tokens = _bucket(token_buckets, min(prefill_tokens + rows, token_buckets[-1]))
    seqs = min(_bucket(seq_buckets, max(prefill_seqs, 1)), tokens)
    return tokens, min(rows, tokens - prefill_tokens), seqs


class MixedBuffers:
    """Fixed device buffers of a padded mixed step, their pinned staging copies, and the
    StepInputs that read them."""

    def __init__(self, *, max_tokens: int, max_seqs: int, width: int, device: torch.device,
                 max_sampled: int | None = None, work_plan: WorkListPlan | None = None) -> None:
        self.max_tokens, self.max_seqs, self.width = max_tokens, max_seqs, width
        self.max_sampled = max_seqs if max_sampled is None else max_sampled
        self.work_plan = work_plan
        pinned = device.type == "cuda"
        # int64: token ids, positions, slot ids (max_tokens each); sampled rows (max_sampled);
        # decode then prefill sequences' rows of the block tables (max_seqs each).
        self._ids_at = 3 * max_tokens + self.max_sampled
        self.longs = torch.zeros(self._ids_at + 2 * max_seqs, dtype=torch.int64, device=device)
        # int32 from 16-byte boundaries: query_starts [S + 1], prefill contexts [S], decode
        # context lengths [S], and with a work_plan the decode rows' work list.
        self._ctx_at = round_width(max_seqs + 1, 4)
        self._dec_at = self._ctx_at + round_width(max_seqs, 4)
        self._work_at = self._dec_at + round_width(max_seqs, 4)
        work_size = 0 if work_plan is None else work_plan.size(max_seqs)
        self.ints = torch.zeros(self._work_at + work_size, dtype=torch.int32, device=device)
        self.prefill_tables = torch.zeros(max_seqs, width, dtype=torch.int32, device=device)
        self.decode_tables = torch.zeros(max_seqs, width, dtype=torch.int32, device=device)
        self._longs_host = torch.zeros(self.longs.numel(), dtype=torch.int64, pin_memory=pinned)
        self._ints_host = torch.zeros(self.ints.numel(), dtype=torch.int32, pin_memory=pinned)

    def fits(self, host: HostStep) -> bool:
        return (len(host.ids) <= self.max_tokens and host.table_width <= self.width
                and len(host.prefill_contexts) + len(host.decode_lens) <= self.max_seqs
                and len(host.logit_rows) <= self.max_sampled)

    def inputs(self, tokens: int, decode_rows: int, seqs: int,
               balanced: bool = False) -> StepInputs:
        """The StepInputs of a step padded to `tokens` rows, the last decode_rows decoding (over
        a work list where balanced), and to `seqs` prefill sequences."""
        t = self.max_tokens
        longs, ints = self.longs, self.ints
        return StepInputs(
            input_ids=longs[:tokens],
            positions=longs[t : t + tokens],
            slot_mapping=SlotIndex(longs[2 * t : 2 * t + tokens], ()),
            prefills=(),
            num_decode_rows=decode_rows,
            block_tables=self.decode_tables[:decode_rows],
            context_lens=ints[self._dec_at : self._dec_at + decode_rows],
            logit_rows=longs[3 * t : 3 * t + min(tokens, self.max_sampled)],
            prefill_batch=PrefillBatch(
                query_starts=ints[: seqs + 1],
                context_lens=ints[self._ctx_at : self._ctx_at + seqs],
                block_tables=self.prefill_tables[:seqs],
            ),
            decode_work=self._work_list(decode_rows) if balanced else None,
        )

    def _work_list(self, decode_rows: int) -> DecodeWorkList | None:
        plan = self.work_plan
        if not decode_rows:
            return None
        return DecodeWorkList(plan, decode_rows,
                              self.ints[self._work_at : self._work_at + plan.size(decode_rows)])

    def empty_staging(self):
        """The staging buffers hold an empty step inside (graphs.empty_staging: no query
        tokens, sampling row 0), for a capture of any bucket."""
        t = self.max_tokens
        return empty_staging((self._longs_host, self._ints_host),
                             self._longs_host[2 * t : 3 * t], self.longs.device)

    def stage(self, host: HostStep, tokens: int, decode_rows: int,
              balanced: bool = False) -> None:
        """The host part of loading a step padded to `tokens` rows with decode_rows decode
        rows (their work list built where balanced): everything into the pinned staging
        buffers. The padded decode rows must lie after the prefill rows (padded_sizes)."""
        t, s = self.max_tokens, self.max_seqs
        num_pre = int(host.query_starts[-1])
        num_dec = len(host.decode_lens)
        num_pre_seqs = len(host.prefill_contexts)
        if tokens - decode_rows < num_pre or decode_rows < num_dec:
            raise ValueError(f"{decode_rows} decode rows of {tokens} do not fit after "
                             f"{num_pre} prefill rows or hold {num_dec} decoding sequences")
        pad = tokens - len(host.ids)  # rows between the prefill and the decode rows
        longs = self._longs_host.numpy()
        rows = longs[: 3 * t].reshape(3, t)
        for row, (values, filler) in enumerate(((host.ids, 0), (host.positions, 0),
                                                (host.slots, -1))):
            rows[row, :num_pre] = values[:num_pre]
            rows[row, num_pre : num_pre + pad] = filler
            rows[row, num_pre + pad : tokens] = values[num_pre:]
        logit = longs[3 * t : self._ids_at]
        logit[:] = 0
        sampled = host.logit_rows
        logit[: len(sampled)] = np.where(sampled >= num_pre, sampled + pad, sampled)
        # Table rows, in the order of the tables they give: padding decode rows (first) and
        # padding prefill sequences (last) gather row 0's table, which they never read.
        first = decode_rows - num_dec  # padding decode rows come first
        ids = longs[self._ids_at :]
        ids[:first] = 0
        ids[first:decode_rows] = host.table_rows[num_pre_seqs:]
        ids[s : s + num_pre_seqs] = host.table_rows[:num_pre_seqs]
        ids[s + num_pre_seqs : 2 * s] = 0
        ints = self._ints_host.numpy()
        ints[: num_pre_seqs + 1] = host.query_starts
        ints[num_pre_seqs + 1 : s + 1] = num_pre
        ints[self._ctx_at : self._ctx_at + num_pre_seqs] = host.prefill_contexts
        ints[self._ctx_at + num_pre_seqs : self._ctx_at + s] = 0
        ints[self._dec_at : self._dec_at + first] = 0
        ints[self._dec_at + first : self._dec_at + decode_rows] = host.decode_lens
        if balanced and decode_rows:
            self.work_plan.build(ints[self._dec_at : self._dec_at + decode_rows],
                                 out=ints[self._work_at :])

    def load(self, tables: DeviceTables, decode_rows: int, seqs: int) -> None:
        """The device part of a step padded to decode_rows decode rows and `seqs` prefill
        sequences (fixed shapes: a graph can hold it): two copies, then the block tables
        gathered from the executor's (synced) tables."""
        self.longs.copy_(self._longs_host, non_blocking=True)
        self.ints.copy_(self._ints_host, non_blocking=True)
        s, ids = self.max_seqs, self.longs[self._ids_at :]
        if decode_rows:
            tables.gather(ids[:decode_rows], self.width, out=self.decode_tables[:decode_rows])
        tables.gather(ids[s : s + seqs], self.width, out=self.prefill_tables[:seqs])


class MixedGraphs:
    """Captured mixed-step forwards of one decoder over one pool, one per token bucket and
    decode-row bucket."""

    def __init__(self, decoder: Decoder, pool: KVPool, tables: DeviceTables, *, max_seqs: int,
                 max_context: int, max_tokens: int = MAX_GRAPH_TOKENS,
                 max_sampled: int | None = None, buckets: list[int] | None = None) -> None:
        self.decoder = decoder
        self.pool = pool
        self.tables = tables
        self.token_buckets = token_buckets(max_tokens) if buckets is None else buckets
        if self.token_buckets[-1] != max_tokens:
            raise ValueError(f"token buckets must end at max_tokens {max_tokens}")
        self.seq_buckets = seq_buckets(max_seqs)
        width = round_width(-(-max_context // pool.block_size))
        self.buffers = MixedBuffers(max_tokens=max_tokens, max_seqs=max_seqs, width=width,
                                    device=decoder.weights.embed.device, max_sampled=max_sampled,
                                    work_plan=decoder.work_list_plan(pool))
        self._set = GraphSet(pool, tables)  # by key()
        self._staged: tuple[tuple[int, int, int, bool], int] = ((0, 0, 1, False), 0)
        self.captures = 0

    def fits(self, host: HostStep) -> bool:
        return self.buffers.fits(host)

    def key(self, host: HostStep, balanced: bool = False) -> tuple[int, int, int, bool]:
        """The step's padded_sizes, and whether its decode rows run over a work list."""
        tokens, decode_rows, seqs = padded_sizes(
            self.token_buckets, self.seq_buckets, int(host.query_starts[-1]),
            len(host.decode_lens), len(host.prefill_contexts))
        return tokens, decode_rows, seqs, balanced and decode_rows > 0

    def prepare(self, key: tuple[int, int, int, bool]) -> None:
        """Capture the graph of this key if needed (outside any timed region)."""
        self._set.prepare(key, self._capture)

    def stage(self, host: HostStep, balanced: bool = False) -> tuple[int, int, int, bool]:
        """The host part of a step (before the timed region; balanced: its decode rows over a
        work list, the backend's plan applying to them); returns its key."""
        key = self.key(host, balanced)
        self.buffers.stage(host, key[0], key[1], key[3])
        self._staged = (key, len(host.logit_rows))
        return key

    def run(self) -> torch.Tensor:
        """The device part of the staged step (prepare() first; the executor's tables synced
        but for apply(), which the graph holds): greedy next tokens of its sampled rows."""
        key, sampled = self._staged
        graph, tokens = self._set.graphs[key]
        graph.replay()
        return tokens[:sampled]

    def _forward(self, tokens: int, decode_rows: int, seqs: int, balanced: bool):
        """What this key's graph holds: the staged inputs to the device, the forward."""
        self.tables.apply()
        self.buffers.load(self.tables, decode_rows, seqs)
        step = self.buffers.inputs(tokens, decode_rows, seqs, balanced)
        return self.decoder.next_tokens(step, self.pool)

    def _capture(self, tokens: int, decode_rows: int, seqs: int, balanced: bool):
        """The forward of this key captured (graphs.capture) over an empty step."""
        self.captures += 1
        with self.buffers.empty_staging():
            return capture(lambda: self._forward(tokens, decode_rows, seqs, balanced),
                           self._set.mempool)
