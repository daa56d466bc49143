"""`kvharness profile`: the GPU executor's own step time over the step shapes traces produce.

The fitted cost model (harness.model.fitted) learns from these rows. Each point is one step the
scheduler could emit: decode-only (a batch of sequences at a mean context, or a skewed batch of
one long sequence among short ones), prefill-only (one chunk after some prior context, or several
fresh prompts packed into one step) or mixed (decodes and one prefill chunk, or several packed
prompts). The sequences are allocated in a real paged allocator of the
run's KV budget, so the block tables are those the scheduler would hand over, and the step is
timed through GpuExecutor.step itself: whatever the executor does (CUDA graphs for decode-only
steps, eager prefill) is what gets measured.

The executor checks each sequence's tokens against its context; a point reuses sequence ids of
earlier points, so every batch after a sequence's first use carries a Preemption that cuts its
tokens back to the length the point needs (ids are assigned so that a reused sequence never
has to grow). The KV pool is filled with random values first: attention over uninitialised
memory could read NaNs, and steps on constant data can run faster than on real data.
"""
from __future__ import annotations

import bisect
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
from harness.engine.batch import Batch, Preemption
from harness.engine.executor import KVGeometry
from harness.gpu.executor import GpuExecutor
from harness.gpu.setup import device_name
from harness.model.budget import bytes_per_token
from harness.model.config import RunConfig
from harness.model.fitted import BALANCE_SKEW_KEY
from reports.schema import PROFILE_COLUMNS

FILL_CHUNK_SLOTS = 8192  # random KV written per call: bounded scratch memory


@dataclass(frozen=True)
class ProfilePoint:
    """One step shape: decodes at decode_contexts (KV length after the step, one per
    sequence), then prefill_seqs sequences of prefill_tokens new tokens each after
    prefill_start tokens of prior context."""

    kind: str  # "decode" | "prefill" | "mixed"
    decode_contexts: tuple[int, ...] = ()
    prefill_start: int = 0
    prefill_tokens: int = 0
    prefill_seqs: int = 1

    @property
    def lengths(self) -> tuple[int, ...]:
        """Tokens each sequence holds when the step runs (decodes, then the prefills)."""
        chunks = self.prefill_seqs if self.prefill_tokens else 0
        return self.decode_contexts + (self.prefill_start + self.prefill_tokens,) * chunks

    @property
    def tokens(self) -> int:
        """The step's batch tokens."""
        return len(self.decode_contexts) + self.prefill_tokens * self.prefill_seqs

    def slots(self, block_size: int) -> int:
        return sum(-(-n // block_size) * block_size for n in self.lengths)


@dataclass(frozen=True)
class GridSpec:
    """The ranges the grid covers (log-spaced inside each)."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    min_context: int = 128
    max_context: int = 131072
    min_chunk: int = 16
    max_prior: int = 65536
    context_factor: int = 4  # ratio of neighbouring contexts, chunks and priors
    mixed_decodes: tuple[int, ...] = (4, 32, 128)
    mixed_contexts: tuple[int, ...] = (1024, 8192)
    # (tokens, prior) of the mixed steps' prefill chunk: the small chunks are the common mixed
    # step of a loaded server (a new prompt's tail or a short prompt joining running decodes).
    mixed_chunks: tuple[tuple[int, int], ...] = ((16, 0), (64, 0), (256, 0), (2048, 0),
                                                 (1024, 4096))
    # Skewed decode batches: one sequence of the long context among short ones, as traces of
    # long conversations produce, at batches below and above the one the split-KV kernel
    # stops splitting at; (short, long) contexts.
    skewed_batches: tuple[int, ...] = (4, 16, 32, 64, 128, 256)
    skewed_contexts: tuple[tuple[int, int], ...] = ((1024, 8192), (1024, 65536))
    # Fresh prompts of packed_chunk tokens packed into one step up to max_num_batched_tokens,
    # alone and beside each of these decode counts at each mixed context: the large steps of a
    # loaded server, which hold many prompts (few attention pairs for their tokens) and up to
    # max_num_seqs decodes.
    packed_chunk: int = 1024
    packed_decodes: tuple[int, ...] = (32, 128, 256)


QUICK_GRID = GridSpec(max_num_seqs=2, max_num_batched_tokens=64, min_context=32, max_context=96,
                      min_chunk=16, max_prior=32, context_factor=3, mixed_decodes=(2,),
                      mixed_contexts=(48,), mixed_chunks=((16, 0),), skewed_batches=(2,),
                      skewed_contexts=((16, 96),), packed_chunk=16, packed_decodes=(2,))


def spread(mean: int, count: int) -> tuple[int, ...]:
    """count contexts spread evenly over [mean / 2, 3 mean / 2] (ragged, as in a real batch),
    summing to about count x mean; a single sequence gets the mean."""
    if count == 1:
        return (mean,)
    return tuple(int(v) for v in np.linspace(mean / 2, 3 * mean / 2, count).round().clip(1))


def _geometric(low: int, high: int, factor: int) -> list[int]:
    values = []
    v = low
    while v < high:
        values.append(v)
        v *= factor
    return values + [high]


def skewed(short: int, long: int, count: int) -> tuple[int, ...]:
    """count contexts: one long, the others short."""
    return (long,) + (short,) * (count - 1)


def profile_grid(spec: GridSpec, *, block_size: int, budget_slots: int) -> list[ProfilePoint]:
    """Decode, prefill, mixed and skewed decode points, interleaved (a cut-short profile still
    covers every kind), leaving out those whose KV does not fit the budget; each kind runs from
    its longest contexts down, so that sequences are reused without growing."""
    batches = _geometric(1, spec.max_num_seqs, 2)
    contexts = _geometric(spec.min_context, spec.max_context, spec.context_factor)
    decode = [ProfilePoint("decode", spread(c, b)) for c in reversed(contexts) for b in
              reversed(batches)]
    chunks = _geometric(spec.min_chunk, spec.max_num_batched_tokens, spec.context_factor)
    priors = [0] + _geometric(spec.min_context * 8, spec.max_prior, spec.context_factor)
    prefill = [ProfilePoint("prefill", (), p, n)
               for p in reversed(priors) for n in reversed(chunks)]
    mixed = [ProfilePoint("mixed", spread(c, d), p, n)
             for c in reversed(spec.mixed_contexts) for d in spec.mixed_decodes
             for n, p in spec.mixed_chunks
             if d <= spec.max_num_seqs and d + n <= spec.max_num_batched_tokens]
    skew = [ProfilePoint("decode", skewed(short, long, b))
            for short, long in reversed(spec.skewed_contexts) for b in reversed(spec.skewed_batches)
            if b <= spec.max_num_seqs]
    packed = [_packed(spec, ())] + [_packed(spec, spread(c, d))
                                    for c in reversed(spec.mixed_contexts)
                                    for d in spec.packed_decodes if d <= spec.max_num_seqs]
    kinds = [[p for p in points if p is not None and p.slots(block_size) <= budget_slots]
             for points in (decode, prefill, mixed, skew, packed)]
    order = []
    for i in range(max(map(len, kinds))):
        order += [points[i] for points in kinds if i < len(points)]
    return order


def _packed(spec: GridSpec, decode_contexts: tuple[int, ...]) -> ProfilePoint | None:
    """As many fresh prompts of spec.packed_chunk tokens as fit beside the decodes (None if
    fewer than two do)."""
    count = (spec.max_num_batched_tokens - len(decode_contexts)) // spec.packed_chunk
    if count < 2:
        return None
    kind = "mixed" if decode_contexts else "prefill"
    return ProfilePoint(kind, decode_contexts, 0, spec.packed_chunk, count)


def assign_seq_ids(points: list[ProfilePoint]) -> tuple[list[list[int]], list[int]]:
    """Sequence ids for every point's sequences (in ProfilePoint.lengths order) and each id's
    first length. A point takes, for each of its lengths, longest first, the free id of the
    shortest length that still covers it, or a new id; the id then holds that length."""
    free: list[tuple[int, int]] = []  # (length held, seq id), sorted
    first: list[int] = []
    assigned = []
    for point in points:
        lengths = point.lengths
        ids = [0] * len(lengths)
        taken = []
        for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
            at = bisect.bisect_left(free, (lengths[index], -1))
            if at < len(free):
                sid = free.pop(at)[1]
            else:
                sid = len(first)
                first.append(lengths[index])
            ids[index] = sid
            taken.append((lengths[index], sid))
        for item in taken:
            bisect.insort(free, item)
        assigned.append(ids)
    return assigned, first


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
    """Times points on one executor whose pool follows one allocator's segments."""

    def __init__(self, executor: GpuExecutor, allocator, *, bytes_per_token: int,
                 repeats: int, warmup: int) -> None:
        self.executor = executor
        self.allocator = allocator
        self.bytes_per_token = bytes_per_token
        self.repeats = repeats
        self.warmup = warmup
        self._segments = list(allocator.segments())  # handed over with the first batch
        self._seen: set[int] = set()

    def measure(self, point: ProfilePoint, seq_ids: list[int]) -> dict:
        """warmup untimed steps (a graph capture, a first compilation), then the median of
        repeats timed ones; the point's sequences are freed again."""
        lengths = point.lengths
        for sid, length in zip(seq_ids, lengths):
            self.allocator.allocate(sid, length)
        batch = point_batch(point, seq_ids, self.allocator)
        times = []
        for repeat in range(self.warmup + self.repeats):
            cut = [Preemption(s, n) for s, n in zip(seq_ids, lengths) if s in self._seen]
            step = dataclasses.replace(batch, preempted=cut, segments_added=self._segments)
            self._segments = []
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
