"""The GPU executor: runs each engine step on the device and returns its measured time.

It plugs into the engine's Executor protocol (harness.engine.executor): the scheduler and the allocator
are the very objects of a simulated run; only the step time is measured (CUDA events around the
device work) instead of priced, so arrivals, queueing, admission and preemption follow the same
code. The executor keeps each sequence's token ids (prompts drawn by harness.gpu.prompts, then the
greedy samples), its block table as last read from the allocator and how much of its KV is
written. The batch tells it what became of sequences since the last step (harness.engine.executor):
forks share the parent's KV; swapped-out KV goes to the host swap space before anything can
overwrite its slots, and swapped-in KV comes back into the new slots; a preempted sequence loses
its KV and keeps the tokens the batch says; a prefill chunk of a sequence with no KV is an
admission whose earlier tokens are prefix-cache hits. Blocks that moved under written tokens
(copy-on-write after a fork, or a static allocator's fork into its own reservation) show up as
block ids that changed in the table and are copied from the old block before the step writes.
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from allocators import Allocator
from harness.model.budget import bytes_per_token
from harness.model.config import RunConfig
from harness.engine.executor import Batch
from harness.gpu.attention import default_backend
from harness.gpu.batching import DecodeWork, PrefillWork, build_step, slots_of
from harness.gpu.graphs import DecodeGraphs
from harness.gpu.kv_pool import KVPool
from harness.gpu.model import Decoder, DecoderConfig, random_weights
from harness.gpu.prompts import prompt_tokens
from harness.gpu.setup import device_name
from harness.gpu.swap import SwapSpace

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class ExecutorError(RuntimeError):
    """The batch disagrees with what the executor knows of a sequence (an engine bug)."""


def build_decoder(model, *, device: str | torch.device, dtype: str = "bfloat16",
                  seed: int = 0) -> Decoder:
    """A Decoder for a harness ModelSpec with seeded random weights on the device."""
    device = torch.device(device)
    config = DecoderConfig.from_model_spec(model)
    weights = random_weights(config, seed=seed, dtype=DTYPES[dtype], device=device)
    return Decoder(config, weights, default_backend(device))


class _Seq:
    __slots__ = ("tokens", "prompt_len", "n", "table", "written")

    def __init__(self, tokens: list[int], prompt_len: int, n: int) -> None:
        self.tokens = tokens
        self.prompt_len = prompt_len
        self.n = n
        # Block ids as last read from the allocator; None while the sequence holds no KV in
        # the pool (not admitted yet, preempted, swapped out or finished).
        self.table: np.ndarray | None = None
        self.written = 0  # tokens whose KV is in the pool at the slots of `table`


class _Timer:
    """CUDA events around the device work (launch gaps included), or the host clock on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.cuda:
            self._start.record()
        else:
            self._t0 = time.perf_counter()

    def stop_s(self) -> float:
        if self.cuda:
            self._end.record()
            self._end.synchronize()
            return self._start.elapsed_time(self._end) / 1e3
        return time.perf_counter() - self._t0


class GpuExecutor:
    """Runs engine steps on a Decoder and a KVPool that follows the allocator's segments."""

    name = "gpu"

    def __init__(
        self, config: RunConfig, allocator: Allocator, *, decoder: Decoder, trace: pd.DataFrame,
        cuda_graphs: bool = True,
    ) -> None:
        weights = decoder.weights
        self.device_t = weights.embed.device
        self.device = device_name(self.device_t)
        self.decoder = decoder
        self.allocator = allocator
        self.seed = config.seed
        c = decoder.config
        if bytes_per_token(config.model) != 2 * c.num_layers * c.num_kv_heads * c.head_dim * \
                config.model.dtype_bytes:
            raise ExecutorError("the decoder's shape differs from the run config's model")
        self._prompt_len = trace["prompt_tokens"].to_numpy(dtype=np.int64).tolist()
        self._n = trace["n"].to_numpy(dtype=np.int64).tolist()
        self._hashes = trace["prefix_hashes"].tolist()
        self._chunk_tokens = int(trace.attrs.get("chunk_tokens", 0))
        self._cuda = self.device_t.type == "cuda"
        self.pool = KVPool(
            allocator, num_layers=c.num_layers, num_kv_heads=c.num_kv_heads,
            head_dim=c.head_dim, dtype=weights.embed.dtype, device=self.device_t,
            prepare=decoder.backend.prepare,
        )
        self.swap = SwapSpace(self.device_t)
        self._graphs = None
        if cuda_graphs and self._cuda and decoder.backend.graph_safe:
            lengths = (trace["prompt_tokens"] + trace["output_tokens"]).to_numpy()
            longest = int(np.max(lengths, initial=1))
            self._graphs = DecodeGraphs(decoder, self.pool, max_batch=config.scheduler.max_num_seqs,
                                        max_context=longest)
        self._graph_steps = 0
        if self._cuda:  # the pool holds nothing yet: what is allocated now is not KV
            torch.cuda.synchronize(self.device_t)
            self._memory_base = torch.cuda.memory_allocated(self.device_t)
        self._seqs: dict[int, _Seq] = {}
        self._timer = _Timer(self.device_t)
        self._host_s = 0.0
        self._device_s = 0.0
        self._steps = 0
        self._swaps = [0, 0]  # sequences swapped out, in
        self._copied_blocks = 0

    # -- what the engine and the recorder read ---------------------------------------------

    @property
    def kv_allocated_bytes(self) -> int:
        """Device memory held now beyond the weights: the KV pool's segments, as the CUDA
        allocator counts them (the pool's own byte count on a CPU)."""
        if self._cuda:
            return torch.cuda.memory_allocated(self.device_t) - self._memory_base
        return self.pool.allocated_bytes

    @property
    def details(self) -> dict:
        c = self.decoder.config
        return {
            "dtype": str(self.decoder.weights.embed.dtype).removeprefix("torch."),
            "attention": self.decoder.backend.name,
            "timing": "cuda events" if self._cuda else "host clock",
            "shape": {"layers": c.num_layers, "heads": c.num_heads, "kv_heads": c.num_kv_heads,
                      "head_dim": c.head_dim, "hidden": c.hidden_size, "vocab": c.vocab_size},
            "steps": self._steps,
            "device_s": round(self._device_s, 6),
            "host_prep_s": round(self._host_s, 6),
            "swapped_out_seqs": self._swaps[0],
            "swapped_in_seqs": self._swaps[1],
            "copied_blocks": self._copied_blocks,
            "cuda_graph_steps": self._graph_steps,
            "cuda_graph_captures": self._graphs.captures if self._graphs else 0,
        }

    def outputs(self) -> dict[int, list[int]]:
        """Generated token ids of every sequence seen, by seq_id."""
        return {sid: s.tokens[s.prompt_len:] for sid, s in self._seqs.items()}

    # -- one step -------------------------------------------------------------------------

    def step(self, batch: Batch) -> float:
        t0 = time.perf_counter()
        for parent, child in batch.forks:
            self._fork(parent, child)
        for sid, kept_tokens in batch.preempted:
            self._preempt(sid, kept_tokens)
        for sid in batch.finished:
            self.swap.drop(sid)  # a rejected swapped request; a completed one holds none
            self._seqs[sid].table = None
        for sid in batch.swapped_in:
            seq = self._seqs[sid]
            seq.table, seq.written = self._layout(sid), self.swap.written(sid)
        prefills, decode, copies = self._plan(batch)
        if not self._warm:
            self._warm_up()
        graph = (self._graphs is not None and not prefills and bool(decode.seq_ids)
                 and self._graphs.fits(decode))
        if graph:
            self._graphs.prepare(len(decode.seq_ids))  # a first use captures, untimed
        self._host_s += time.perf_counter() - t0

        self._timer.start()
        # Swapped-out KV is read before the pool follows the allocator (which may have released
        # its segment) and before anything this step writes reuses its slots.
        for sid in batch.swapped_out:
            self._swap_out(sid)
        self.pool.sync()
        for src, dst in copies:
            self.pool.write_slots(self.pool.index(dst), self.pool.read_slots(self.pool.index(src)))
        for sid in batch.swapped_in:
            self._swap_in(sid)
        sampled: list[int] = []
        next_tokens = None
        if graph:
            next_tokens, sampled = self._graphs.run(decode), decode.seq_ids
            self._graph_steps += 1
        elif prefills or decode.seq_ids:
            step, sampled = build_step(prefills, decode, self.pool, self.device_t)
            next_tokens = self.decoder.forward(step, self.pool).argmax(dim=-1)
        seconds = self._timer.stop_s()

        if next_tokens is not None:
            for sid, token in zip(sampled, next_tokens.tolist()):
                self._seqs[sid].tokens.append(token)
        self._steps += 1
        self._device_s += seconds
        return seconds

    def _warm_up(self) -> None:
        """Before the first timed step: back the first segments and compile the kernels, so
        that no step's time holds a compilation."""
        self.pool.sync()
        self.decoder.backend.warmup(self.pool, self.decoder.config.num_heads)
        self._warm = True

    # -- host-side bookkeeping --------------------------------------------------------------

    _warm = False

    def _new_seq(self, sid: int, rid: int) -> _Seq:
        prompt = self._prompt_len[rid]
        tokens = prompt_tokens(
            rid, prompt, self.decoder.config.vocab_size, seed=self.seed,
            prefix_hashes=self._hashes[rid], chunk_tokens=self._chunk_tokens,
        )
        seq = _Seq(tokens.tolist(), prompt, self._n[rid])
        self._seqs[sid] = seq
        return seq

    def _fork(self, parent: int, child: int) -> None:
        """The child starts as the parent: same tokens, and the parent's blocks as the ones its
        KV was written in, so that whatever the allocator gives it is filled by _refresh."""
        p = self._seqs[parent]
        c = _Seq(list(p.tokens), p.prompt_len, p.n)
        c.table, c.written = p.table, p.written
        self._seqs[child] = c

    def _preempt(self, sid: int, kept_tokens: int) -> None:
        """Preempted by recompute: the KV is gone; the request prefills its kept tokens again."""
        seq = self._seqs[sid]
        del seq.tokens[kept_tokens:]
        seq.table, seq.written = None, 0

    def _layout(self, sid: int) -> np.ndarray:
        return np.asarray(self.allocator.layout(sid).block_table, dtype=np.int64)

    def _plan(self, batch: Batch):
        """Read layouts and decide the step's work: prefill chunks, decode rows and block
        copies (copy-on-write, a static fork), without touching the device."""
        prefills: list[PrefillWork] = []
        rows: tuple[list, list, list, list] = ([], [], [], [])  # seq ids, tokens, lens, tables
        copies: list[tuple[np.ndarray, np.ndarray]] = []
        for sid, rid, num_new, context, is_prefill, samples in batch.entries:
            seq = self._seqs.get(sid) or self._new_seq(sid, rid)
            if is_prefill:
                prefills.append(self._plan_prefill(sid, seq, context - num_new, context, samples,
                                                   copies))
            else:
                self._plan_decode(sid, seq, context, rows, copies)
            seq.written = context
        decode = DecodeWork(rows[0], np.asarray(rows[1], np.int64), np.asarray(rows[2], np.int64),
                            rows[3])
        return prefills, decode, copies

    def _plan_prefill(self, sid: int, seq: _Seq, start: int, context: int, samples: bool,
                      copies) -> PrefillWork:
        if seq.table is None:  # an admission: the KV before start is a prefix-cache hit
            seq.written = start
        elif start != seq.written:
            raise ExecutorError(f"seq {sid}: prefill from {start} with {seq.written} written")
        self._refresh(seq, self._layout(sid), copies)
        if len(seq.tokens) < context or (samples and len(seq.tokens) != context):
            raise ExecutorError(f"seq {sid}: prefill to {context} of {len(seq.tokens)} tokens")
        chunk = np.asarray(seq.tokens[start:context], dtype=np.int64)
        return PrefillWork(sid, chunk, start, context, seq.table, samples)

    def _plan_decode(self, sid: int, seq: _Seq, context: int, rows, copies) -> None:
        if len(seq.tokens) != context or seq.written != context - 1:
            raise ExecutorError(f"seq {sid}: decode to {context} with {len(seq.tokens)} tokens, "
                                f"{seq.written} written")
        # Blocks of a running sequence only move by copy-on-write, which needs samples sharing
        # them (n > 1); otherwise its table only grows, at block boundaries.
        if seq.n > 1 or len(seq.table) * self.pool.block_size < context:
            self._refresh(seq, self._layout(sid), copies)
        for column, value in zip(rows, (sid, seq.tokens[context - 1], context, seq.table)):
            column.append(value)

    def _refresh(self, seq: _Seq, table: np.ndarray, copies: list) -> None:
        """Adopt a freshly read block table; written tokens whose block moved are copied."""
        old = seq.table
        if old is not None and seq.written:
            bs = self.pool.block_size
            used = min(-(-seq.written // bs), len(old), len(table))
            moved = np.flatnonzero(old[:used] != table[:used])
            if moved.size:
                offsets = np.arange(bs)
                pos = (moved[:, None] * bs + offsets).ravel()
                pos = pos[pos < seq.written]
                copies.append((slots_of(old, pos, bs), slots_of(table, pos, bs)))
                self._copied_blocks += int(moved.size)
        seq.table = table

    def _swap_out(self, sid: int) -> None:
        """Save a sequence's written KV in the host swap space; its slots are the allocator's
        again."""
        seq = self._seqs[sid]
        slots = slots_of(seq.table, np.arange(seq.written), self.pool.block_size)
        self.swap.save(sid, self.pool.read_slots(self.pool.index(slots)), seq.written)
        seq.table = None
        self._swaps[0] += 1

    def _swap_in(self, sid: int) -> None:
        seq = self._seqs[sid]
        slots = slots_of(seq.table, np.arange(seq.written), self.pool.block_size)
        self.pool.write_slots(self.pool.index(slots), self.swap.load(sid, self.device_t))
        self._swaps[1] += 1
