"""`kvharness profile`: the GPU executor's own step time over the step shapes traces produce.

The fitted cost model (harness.model.fitted) learns from these rows. Each point is one step the
scheduler could emit: decode-only (a batch of sequences at a mean context, or a skewed batch of
one long sequence among short ones), prefill-only (one chunk after some prior context, or several
fresh prompts packed into one step) or mixed (decodes and one prefill chunk, or several packed
prompts; the grid: harness/gpu/profile_grid.py). The sequences are allocated in a real paged
allocator of the run's KV budget, so the block tables are those the scheduler would hand over,
and the step is timed through GpuExecutor.step itself: whatever the executor does (CUDA graphs
for decode-only steps, eager prefill) is what gets measured.

The executor checks each sequence's tokens against its context; a point reuses sequence ids of
earlier points, so every batch after a sequence's first use carries a Preemption that cuts its
tokens back to the length the point needs (ids are assigned so that a reused sequence never
has to grow). The KV pool is filled with random values first: attention over uninitialised
memory could read NaNs, and steps on constant data can run faster than on real data.
"""
from __future__ import annotations

import dataclasses
import datetime
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from allocators import spec_of
from harness.engine.batch import Batch, Preemption, segment_changes
from harness.engine.executor import KVGeometry
from harness.gpu.executor import GpuExecutor
from harness.gpu.profile_grid import GridSpec, ProfilePoint, assign_seq_ids, profile_grid
from harness.gpu.setup import device_name
from harness.model.budget import bytes_per_token
from harness.model.config import RunConfig
from harness.model.fitted import BALANCE_SKEW_KEY
from reports.schema import PROFILE_COLUMNS

FILL_CHUNK_SLOTS = 8192  # random KV written per call: bounded scratch memory


def profile_trace(first_lengths: list[int]) -> pd.DataFrame:
    """The executor's view of the sequences: one request per id, its prompt as long as the id's
    first use (the executor draws those tokens)."""
    from workloads.trace import make_trace

    rows = len(first_lengths)
    return make_trace(
        arrival_s=np.zeros(rows), prompt_tokens=np.asarray(first_lengths, np.int64),
        output_tokens=np.ones(rows, np.int64), n=np.ones(rows, np.int64), prefix_hashes=None,
        failed=np.zeros(rows, bool),
        attrs={"name": "profile", "source": "kvharness profile", "format": "synthetic"},
    )


def gpu_slug(device: torch.device) -> str:
    """What the profile's file name calls the device: "NVIDIA H200" -> "h200"."""
    name = device_name(device).lower()
    found = re.search(r"\b([a-z]\d{2,3})\b", name)
    return found.group(1) if found else re.sub(r"[^a-z0-9]+", "_", name).strip("_")


def fill_random(pool, segments, *, seed: int) -> None:
    """Random normal K/V in every slot of the given segments, a chunk at a time."""
    device = pool.device
    generator = torch.Generator(device=device).manual_seed(seed)
    per_segment = pool.slots_per_segment
    for seg in segments:
        for start in range(0, per_segment, FILL_CHUNK_SLOTS):
            stop = min(per_segment, start + FILL_CHUNK_SLOTS)
            slots = np.arange(seg * per_segment + start, seg * per_segment + stop)
            data = torch.randn(pool.num_layers, 2, len(slots), pool.num_kv_heads, pool.head_dim,
                               generator=generator, dtype=pool.dtype, device=device)
            pool.write_slots(pool.index(slots), data)


def point_batch(point: ProfilePoint, seq_ids: list[int], allocator) -> Batch:
    """The batch the scheduler would emit for the point, block tables from the allocator."""
    batch = Batch()
    for sid, context in zip(seq_ids, point.decode_contexts):
        batch.add_decode(sid, sid, context)
    for sid in seq_ids[len(point.decode_contexts):]:
        batch.add_prefill(sid, sid, point.prefill_start, point.prefill_tokens, samples=True)
    for seq in batch.seqs:
        seq.block_table = allocator.layout(seq.seq_id).block_table
    return batch


class PointTimer:
    """Times points on one executor whose pool follows one allocator's segments (those it adds
    and releases as points allocate and free, for allocators that grow on demand)."""

    def __init__(self, executor: GpuExecutor, allocator, *, bytes_per_token: int,
                 repeats: int, warmup: int) -> None:
        self.executor = executor
        self.allocator = allocator
        self.bytes_per_token = bytes_per_token
        self.repeats = repeats
        self.warmup = warmup
        self._segments: tuple[int, ...] = ()  # the executor's pool holds these
        self._seen: set[int] = set()

    def measure(self, point: ProfilePoint, seq_ids: list[int]) -> dict:
        """warmup untimed steps (a graph capture, a first compilation), then the median of
        repeats timed ones; the point's sequences are freed again."""
        lengths = point.lengths
        for sid, length in zip(seq_ids, lengths):
            self.allocator.allocate(sid, length)
        batch = point_batch(point, seq_ids, self.allocator)
        now = self.allocator.segments()
        added, released = segment_changes(self._segments, now)
        self._segments = now
        times = []
        for repeat in range(self.warmup + self.repeats):
            cut = [Preemption(s, n) for s, n in zip(seq_ids, lengths) if s in self._seen]
            step = dataclasses.replace(batch, preempted=cut, segments_added=added,
                                       segments_released=released)
            added, released = [], []
            seconds = self.executor.step(step)
            self._seen.update(seq_ids)
            if repeat >= self.warmup:
                times.append(seconds * 1e3)
        for sid in seq_ids:
            self.allocator.free(sid)
        return self._row(point, batch, times)

    def _row(self, point: ProfilePoint, batch: Batch, times: list[float]) -> dict:
        prior = batch.prefill_context_tokens - batch.prefill_tokens
        return {
            "kind": point.kind, "block_size": self.allocator.block_size,
            "batch": len(batch.seqs), "prefill_tokens": batch.prefill_tokens,
            "decode_tokens": batch.decode_tokens,
            "decode_context_tokens": batch.decode_context_tokens,
            "decode_max_context": batch.decode_max_context,
            "prefill_context_tokens": batch.prefill_context_tokens,
            "prefill_attention_pairs": batch.prefill_attention_pairs,
            "kv_bytes_read": self.bytes_per_token * (batch.decode_context_tokens + prior),
            "measured_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
            "repeats": len(times),
        }


@dataclass(frozen=True)
class ProfileSettings:
    grid: GridSpec = GridSpec()
    block_sizes: tuple[int, ...] = (16,)
    repeats: int = 5
    warmup: int = 1
    deadline: float | None = None  # time.monotonic() after which no new point starts


@dataclass(frozen=True)
class ProfileSetup:
    """What an executor of one block size's points is built from: its KV geometry, the trace
    of its sequences' first lengths and the allocator's segments (filled with random KV)."""

    geometry: KVGeometry
    trace: pd.DataFrame
    segments: tuple[int, ...]

    def executor(self, config: RunConfig, decoder) -> GpuExecutor:
        executor = GpuExecutor(config, self.geometry, decoder=decoder, trace=self.trace)
        executor.pool.sync(list(self.segments), [])
        fill_random(executor.pool, self.segments, seed=config.seed)
        return executor


def measure_profile(config: RunConfig, decoder, settings: ProfileSettings, *,
                    log=print, lead=None) -> pd.DataFrame:
    """The profile's rows (PROFILE_COLUMNS) for every block size of settings. lead: under
    tensor parallelism, rank 0's lead(setup, executor), which hands the setup to the other
    ranks and returns the executor that hands them every step (harness.gpu.tp_run)."""
    rows: list[dict] = []
    for block_size in settings.block_sizes:
        rows += _measure_block_size(config, decoder, settings, block_size, log, lead)
    return pd.DataFrame(rows, columns=list(PROFILE_COLUMNS))


def follow_profile(config: RunConfig, decoder, receive) -> None:
    """A tensor-parallel rank but 0: each ProfileSetup rank 0 sends builds the executor it
    builds, and every batch it sends is stepped, until it sends None."""
    executor = None
    while (message := receive()) is not None:
        if isinstance(message, ProfileSetup):
            executor = None  # the last block size's pool goes before the next one's comes
            executor = message.executor(config, decoder)
        else:
            executor.step(message)


def _measure_block_size(config: RunConfig, decoder, settings: ProfileSettings, block_size: int,
                        log, lead) -> list[dict]:
    from harness.model.budget import kv_budget

    budget = kv_budget(config).slots
    allocator = spec_of("paged").build(budget, {"block_size": block_size})
    points = profile_grid(settings.grid, block_size=block_size, budget_slots=budget)
    seq_ids, first = assign_seq_ids(points)
    setup = ProfileSetup(KVGeometry(allocator.block_size, allocator.blocks_per_segment, budget),
                         profile_trace(first), tuple(allocator.segments()))
    executor = setup.executor(config, decoder)
    if lead is not None:
        executor = lead(setup, executor)
    timer = PointTimer(executor, allocator, bytes_per_token=bytes_per_token(config.model),
                       repeats=settings.repeats, warmup=settings.warmup)
    rows = []
    for index, (point, ids) in enumerate(zip(points, seq_ids), start=1):
        if settings.deadline is not None and time.monotonic() > settings.deadline:
            log(f"block size {block_size}: out of time after {index - 1}/{len(points)} points")
            break
        row = timer.measure(point, ids)
        rows.append(row)
        log(f"[bs {block_size} {index}/{len(points)}] {row['kind']:7s} batch {row['batch']:3d} "
            f"prefill {row['prefill_tokens']:5d} decode ctx {row['decode_context_tokens']:8d} "
            f"prefill ctx {row['prefill_context_tokens']:6d}: {row['measured_ms']:.3f} ms")
    return rows


def profile_header(device: torch.device, config: RunConfig, command: str,
                   settings: ProfileSettings, balance_skew: float | None) -> list[str]:
    """`# key: value` lines: device, versions, date, command, and what the rows assume (among
    it the skew above which the executor decoded a step over a work list,
    harness.gpu.attention.balance_skew, which the fitted model reads)."""
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return [
        f"device: {device_name(device)}", f"torch: {torch.__version__}",
        f"triton: {triton_version}", f"date: {datetime.date.today().isoformat()}",
        f"command: {command}", f"model: {config.model.name}",
        f"bytes_per_token: {bytes_per_token(config.model)}",
        f"max_num_seqs: {config.scheduler.max_num_seqs}",
        f"max_num_batched_tokens: {config.scheduler.max_num_batched_tokens}",
        f"tp: {config.tp}",
        f"{BALANCE_SKEW_KEY}: {'none' if balance_skew is None else f'{balance_skew:g}'}",
        f"repeats: median of {settings.repeats} after {settings.warmup} untimed",
    ]


def write_profile(path: Path, header: list[str], frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        fh.write("".join(f"# {line}\n" for line in header))
        frame.to_csv(fh, index=False, lineterminator="\n", float_format="%.6g")
    return path


def profile_command(argv: list[str] | None = None) -> str:
    return "kvharness " + " ".join(sys.argv[1:] if argv is None else argv)
