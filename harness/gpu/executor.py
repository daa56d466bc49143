"""The GPU executor: runs each engine step on the device and returns its measured time.

It plugs into the engine's Executor protocol (harness.engine.executor): the scheduler and the
allocator are the very objects of a simulated run; only the step time is measured (CUDA events
around the device work) instead of priced, so arrivals, queueing, admission and preemption follow
the same code. It never sees the allocator: each batch (harness.engine.batch) brings the block
tables of the scheduled sequences, the segments added and released, the block copies the
allocator decided on, and what became of sequences (forks, swaps, preemptions, finishes). The
executor keeps only what the model produces: each sequence's token ids (prompts drawn by
harness.gpu.prompts, then the greedy samples), the KV of swapped-out sequences on the host, and
with a host tier of the prefix cache its blocks in pinned host memory (both applied by
harness.gpu.memory_ops).
With the run's kv_dtype fp8 the pool is float8 e4m3, its scales calibrated once
(harness.gpu.calibration) before the first step. A verification of speculative drafts gets
real drafts and the target's tokens at every verified position (harness.gpu.speculative).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from harness.engine.batch import Batch
from harness.engine.executor import KVGeometry
from harness.model.budget import kv_heads_per_gpu
from harness.model.config import RunConfig
from harness.gpu.attention import default_backend
from harness.gpu.batching import (
    DecodeWork, HostStep, PrefillWork, layout_step, to_device,
)
from harness.gpu.calibration import calibrate_kv_scales
from harness.gpu.device_tables import DeviceTables
from harness.gpu.graphs import DecodeGraphs
from harness.gpu.host_state import TableRows, TokenStore
from harness.gpu.kv_pool import KVPool
from harness.gpu.memory_ops import MemoryOps
from harness.gpu.mixed_graphs import MAX_GRAPH_TOKENS, MixedGraphs, measured_token_buckets
from harness.gpu.model import SINGLE_RANK, Decoder, DecoderConfig, random_weights
from harness.gpu.prompts import prompt_tokens
from harness.gpu.setup import device_name
from harness.gpu.speculative import SelfDrafter, Verification, keep_sampled
from harness.gpu.step_log import StepLog, StepRecord
from harness.gpu.step_plan import ExecutorError, plan_step
from harness.gpu.timing import DeviceTimer, HostClock
from kernels.fp8 import FP8_DTYPE
from kernels.work_list import WorkListPlan, plan_for

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def pool_dtype(kv_dtype: str, model_dtype: torch.dtype) -> torch.dtype:
    """The KV pool's element type for a run's kv_dtype: float8 e4m3 for fp8; for bf16 the
    decoder's own dtype (bfloat16 but in float32 CPU runs of the same code)."""
    return FP8_DTYPE if kv_dtype == "fp8" else model_dtype


def build_decoder(model, *, device: str | torch.device, dtype: str = "bfloat16",
                  seed: int = 0, tp=SINGLE_RANK, decode_balance: str = "auto") -> Decoder:
    """A Decoder for a harness ModelSpec with seeded random weights on the device (this rank's
    shard of them under tensor parallelism, harness.gpu.tp); decode_balance: which decode
    steps its GPU backend runs over work lists (harness.gpu.attention.DECODE_BALANCE)."""
    device = torch.device(device)
    config = DecoderConfig.from_model_spec(model)
    weights = random_weights(config, seed=seed, dtype=DTYPES[dtype], device=device, tp=tp)
    return Decoder(config, weights, default_backend(device, decode_balance=decode_balance),
                   tp=tp)


@dataclass
class _Staged:
    """What the host prepared for a step: decode rows staged for a decode graph, or the laid-out
    step (and the key of the mixed graph it was staged for, if one fits); the decode rows' work
    list plan where they run over one."""

    decode: DecodeWork
    work: WorkListPlan | None = None
    decode_graph: bool = False
    host: HostStep | None = None
    mixed_key: tuple[int, int, int, bool] | None = None


class GpuExecutor:
    """Runs engine steps on a Decoder and a KVPool that follows the allocator's segments."""

    name = "gpu"
    needs_layouts = True

    def __init__(
        self, config: RunConfig, geometry: KVGeometry, *, decoder: Decoder, trace: pd.DataFrame,
        cuda_graphs: bool = True,
    ) -> None:
        weights = decoder.weights
        self.device_t = weights.embed.device
        self.device = device_name(self.device_t)
        self.decoder = decoder
        self.seed = config.seed
        c = decoder.config
        if config.tp != decoder.tp.size:
            raise ExecutorError(f"the run config's tp {config.tp} differs from the decoder's "
                                f"{decoder.tp.size} ranks")
        m = config.model
        if (m.num_layers, kv_heads_per_gpu(m, config.tp), m.head_dim) != (
                c.num_layers, decoder.num_kv_heads, c.head_dim):
            raise ExecutorError("the decoder's shape differs from the run config's model")
        self._prompt_len = trace["prompt_tokens"].to_numpy(dtype=np.int64).tolist()
        self._output_len = trace["output_tokens"].to_numpy(dtype=np.int64).tolist()
        self._hashes = trace["prefix_hashes"].tolist()
        self._chunk_tokens = int(trace.attrs.get("chunk_tokens", 0))
        self._cuda = self.device_t.type == "cuda"
        self.pool = KVPool(
            geometry, num_layers=c.num_layers, num_kv_heads=decoder.num_kv_heads,
            head_dim=c.head_dim, dtype=pool_dtype(config.kv_dtype, weights.embed.dtype),
            device=self.device_t, prepare=decoder.backend.prepare,
        )
        if self.pool.scales is not None:
            self.pool.set_scales(*calibrate_kv_scales(decoder, seed=config.seed))
        lengths = (trace["prompt_tokens"] + trace["output_tokens"]).to_numpy()
        longest = int(np.max(lengths, initial=1))
        max_seqs = config.scheduler.max_num_seqs
        # Block tables of the sequences holding KV, on the host and on the device; wide enough
        # for the longest request from the start (a wider table still grows them).
        self._tables = TableRows(rows=max_seqs, width=-(-longest // self.pool.block_size))
        # A step changes the blocks of its new tokens and the last block of each sequence.
        self._device_tables = DeviceTables(
            self._tables, self.device_t,
            changes=config.scheduler.max_num_batched_tokens // self.pool.block_size + 2 * max_seqs)
        self.memory = MemoryOps(self.pool, self._tables, self.device_t,
                                geometry.host_tier_blocks)
        # A verification samples every row: its drafts and the last token.
        max_sampled = max_seqs * (1 + int(np.max(trace["spec_tokens"].to_numpy(), initial=0)))
        self._graphs = self._mixed = None
        if cuda_graphs and self._cuda and decoder.backend.graph_safe:
            self._graphs = DecodeGraphs(decoder, self.pool, self._device_tables,
                                        max_batch=max_seqs, max_context=longest)
            self._mixed = MixedGraphs(decoder, self.pool, self._device_tables,
                                      max_seqs=max_seqs, max_context=longest,
                                      max_sampled=max_sampled,
                                      buckets=measured_token_buckets(decoder, MAX_GRAPH_TOKENS))
        # On a GPU a step's sampled token ids come back into this pinned buffer, copied on the
        # step's stream before its end event: reading them after the step waits for nothing
        # and makes no CUDA call (a pageable .cpu() after the step was a large part of the
        # host preparation left after a step; README, host preparation).
        self._sampled_host = (torch.zeros(max_sampled, dtype=torch.int64, pin_memory=True)
                              if self._cuda else None)
        self._work_plan = decoder.work_list_plan(self.pool)  # None: unbalanced decode
        self._graph_steps = 0
        self._balanced_steps = 0
        if self._cuda:  # the pool holds nothing yet: what is allocated now is not KV
            torch.cuda.synchronize(self.device_t)
            self._memory_base = torch.cuda.memory_allocated(self.device_t)
        # Prompt and sampled token ids of every sequence, with room for every request's
        # samples from the start.
        self._tokens = TokenStore(int((lengths + 1) @ trace["n"].to_numpy()))
        self._rid: dict[int, int] = {}  # seq_id -> request id
        self._by_segment = decoder.backend.indexes_by_segment
        self._drafter = SelfDrafter(decoder, self.pool, self._graphs, by_segment=self._by_segment)
        self.step_log = StepLog()
        self._timer = DeviceTimer(self.device_t)
        self._warm = False
        self._host_s = 0.0
        self._host_cpu_s = 0.0
        self._device_s = 0.0
        self._steps = 0
        self._draft_mismatches = 0

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
            "kv_dtype": str(self.pool.dtype).removeprefix("torch."),
            "attention": self.decoder.backend.name,
            "timing": "cuda events" if self._cuda else "host clock",
            "tp": self.decoder.tp.size,
            "shape": {"layers": c.num_layers, "heads": c.num_heads, "kv_heads": c.num_kv_heads,
                      "head_dim": c.head_dim, "hidden": c.hidden_size, "vocab": c.vocab_size},
            "steps": self._steps,
            "device_s": round(self._device_s, 6),
            "host_prep_s": round(self._host_s, 6),
            "host_prep_cpu_s": round(self._host_cpu_s, 6),
            "swapped_out_seqs": self.memory.swaps[0],
            "swapped_in_seqs": self.memory.swaps[1],
            "copied_blocks": self.memory.copied_blocks,
            "draft_mismatches": self._draft_mismatches,
            **({"host_offloaded_blocks": self.memory.host_copied[0],
                "host_restored_blocks": self.memory.host_copied[1]}
               if self.memory.host_tier else {}),
            "decode_balance_skew": None if self._work_plan is None else self._work_plan.skew,
            "balanced_decode_steps": self._balanced_steps,
            "cuda_graph_steps": self._graph_steps,
            "cuda_graph_captures": (self._graphs.captures + self._mixed.captures
                                    if self._graphs else 0),
            "mixed_graph_token_buckets": self._mixed.token_buckets if self._mixed else [],
        }

    def outputs(self) -> dict[int, list[int]]:
        """Generated token ids of every sequence seen, by seq_id."""
        return {sid: self._tokens.ids(sid)[self._prompt_len[self._rid[sid]]:].tolist()
                for sid in self._tokens.seq_ids()}

    def request_of(self, seq_id: int) -> int:
        """The request a sequence seen belongs to (samples and beams have ids of their own)."""
        return self._rid[seq_id]

    # -- one step -------------------------------------------------------------------------

    def step(self, batch: Batch) -> float:
        if not self._warm:  # compiles kernels: no part of any step's preparation
            self._warm_up(batch)
        host = HostClock()
        rollback_s = self._lifecycle(batch)
        host.stop()
        self._arrivals(batch)
        host.start()
        t0 = time.perf_counter()
        prefills, verifications, decode, rows = plan_step(batch.seqs, self._tokens,
                                                          self._tables)
        plan_s = time.perf_counter() - t0
        seconds = 0.0
        if verifications:
            self._device_tables.stage()
            host.stop()
            seconds = self._draft(batch, verifications)
            host.start()
            prefills = prefills + [v.work(self._tokens) for v in verifications]
        t1 = time.perf_counter()
        staged = self._stage(prefills, decode, rows)
        stage_s = time.perf_counter() - t1
        host.stop()
        if staged.decode_graph:  # a first use captures, untimed
            self._graphs.prepare()
        elif staged.mixed_key is not None:
            self._mixed.prepare(staged.mixed_key)

        self.decoder.tp.align()  # every rank's host work done: the timer sees device work
        t1 = time.perf_counter()
        graphed = staged.decode_graph or staged.mixed_key is not None
        self._timer.start()
        if not verifications:
            self.memory.apply(batch)
        self._device_tables.sync(graph_applies=graphed)
        next_tokens, sampled = self._forward(staged)
        if next_tokens is not None and self._sampled_host is not None:
            next_tokens = self._sampled_host[: next_tokens.shape[0]].copy_(next_tokens,
                                                                          non_blocking=True)
        self._graph_steps += graphed
        self._balanced_steps += staged.work is not None
        enqueue_s = time.perf_counter() - t1
        seconds += self._timer.stop_s()

        host.start()
        if next_tokens is not None:
            self._draft_mismatches += keep_sampled(self._tokens, verifications, sampled,
                                                   next_tokens.numpy())
        host.stop()
        self._record(batch, verifications, graphed,
                     (host.wall_s, host.cpu_s, plan_s, stage_s, rollback_s), enqueue_s, seconds)
        return seconds

    def _draft(self, batch: Batch, verifications: list[Verification]) -> float:
        """The drafts of a step's verifications, decoded into its new slots: so its memory
        operations (and the tables on the device, staged) go first, timed; the drafting is no
        part of the step (harness.gpu.speculative). Returns the memory operations' seconds."""
        self.decoder.tp.align()
        self._timer.start()
        self.memory.apply(batch)
        self._device_tables.sync()
        seconds = self._timer.stop_s()
        self._drafter.draft(verifications, self._device_tables, self._tokens)
        return seconds

    def _stage(self, prefills: list[PrefillWork], decode: DecodeWork,
               rows: np.ndarray) -> _Staged:
        """The host part of a step: its work laid out, and staged for a graph if one fits."""
        tables = self._tables.array
        staged = _Staged(decode, plan_for(self._work_plan, decode.context_lens))
        balanced = staged.work is not None
        if (self._graphs is not None and not prefills and len(decode.seq_ids)
                and self._graphs.fits(decode)):
            self._graphs.stage(decode, rows, tables, balanced)
            staged.decode_graph = True
        elif prefills or len(decode.seq_ids):
            staged.host = layout_step(prefills, decode, rows, tables, self.pool.block_size)
            if self._mixed is not None and self._mixed.fits(staged.host):
                staged.mixed_key = self._mixed.stage(staged.host, balanced)
        self._device_tables.stage()
        return staged

    def _forward(self, staged: _Staged) -> tuple[torch.Tensor | None, np.ndarray]:
        """The device part of a step: its forward (a graph replay where one was staged); the
        next tokens and the seq ids they belong to."""
        if staged.decode_graph:
            return self._graphs.run(), staged.decode.seq_ids
        host = staged.host
        if host is None:
            return None, np.zeros(0, np.int64)
        if staged.mixed_key is not None:
            return self._mixed.run(), host.sampled
        step = to_device(host, self.pool, self._device_tables, self.device_t,
                         by_segment=self._by_segment, work_plan=staged.work)
        return self.decoder.next_tokens(step, self.pool), host.sampled

    def _lifecycle(self, batch: Batch) -> float:
        """What became of sequences since the last batch, for the tokens and tables kept (a
        truncated sequence's shorter table comes with its next step); returns the seconds the
        rollbacks took."""
        bs = self.pool.block_size
        t0 = time.perf_counter()
        for cut in batch.truncated:  # the kept KV, and the token after it: the next input
            self._tokens.truncate(cut.seq_id, cut.num_tokens + 1)
            self._tables.truncate(cut.seq_id, -(-cut.num_tokens // bs))
        rollback_s = time.perf_counter() - t0
        for fork in batch.forks:
            self._tokens.fork(fork.parent, fork.child)
            self._rid[fork.child] = self._rid[fork.parent]
        for preemption in batch.preempted:
            self._tokens.truncate(preemption.seq_id, preemption.kept_tokens)
            self._tables.drop(preemption.seq_id)
        for sid in batch.finished:
            self.memory.swap.drop(sid)  # a rejected swapped request; a completed one holds none
            self._tables.drop(sid)
        return rollback_s

    def _record(self, batch: Batch, verifications: list[Verification], graph: bool,
                host: tuple[float, float, float, float, float], enqueue_s: float,
                seconds: float) -> None:
        """host: the step's host preparation, its thread's CPU time, and of it planning,
        staging and rollbacks."""
        self._steps += 1
        self._device_s += seconds
        self._host_s += host[0]
        self._host_cpu_s += host[1]
        verify_tokens = sum(v.context - v.start for v in verifications)
        decode_seqs = batch.decode_tokens - verify_tokens
        self.step_log.append(StepRecord(
            graph, decode_seqs, batch.decode_context_tokens, batch.decode_max_context,
            len(batch.seqs) - decode_seqs - len(verifications), batch.prefill_tokens,
            batch.prefill_context_tokens, batch.prefill_attention_pairs, len(verifications),
            verify_tokens, *host, enqueue_s, seconds))

    def _warm_up(self, batch: Batch) -> None:
        """Before the first timed step: back the first segments and compile the kernels, so
        that no step's time holds a compilation."""
        self.pool.sync(batch.segments_added, batch.segments_released)
        self.decoder.backend.warmup(self.pool, self.decoder.num_heads,
                                    self.decoder.weights.embed.dtype,
                                    self.decoder.config.sliding_window)
        self._warm = True

    # -- host-side preparation ----------------------------------------------------------------

    def _arrivals(self, batch: Batch) -> None:
        """The prompts of the requests the batch admits for the first time (forks took their
        parent's tokens in _lifecycle). A server receives a request's tokens with it; drawing
        them is the harness's work, so no part of the step's host preparation."""
        tokens = self._tokens
        for seq in batch.seqs:
            if seq.seq_id not in tokens:
                rid = seq.request_id
                prompt = prompt_tokens(
                    rid, self._prompt_len[rid], self.decoder.config.vocab_size, seed=self.seed,
                    prefix_hashes=self._hashes[rid], chunk_tokens=self._chunk_tokens,
                )
                tokens.start(seq.seq_id, prompt,
                             self._prompt_len[rid] + self._output_len[rid] + 1)
                self._rid[seq.seq_id] = rid
