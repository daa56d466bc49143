"""The step shapes `kvharness profile` times (harness/gpu/profile.py): ProfilePoint, the grid a
GridSpec spans (decode-only, skewed, prefill-only, packed and mixed steps within the scheduler's
limits and the KV budget), and the sequence ids the points share."""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np


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
    # alone and beside each of these decode counts at each mixed context (fewer where prompts
    # and decodes would pass max_num_seqs sequences): the large steps of a loaded server, which
    # hold many prompts (few attention pairs for their tokens) and up to max_num_seqs decodes.
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
    packed = [_packed(spec, 0, 0)] + [_packed(spec, c, d) for c in reversed(spec.mixed_contexts)
                                      for d in spec.packed_decodes if d <= spec.max_num_seqs]
    kinds = [[p for p in points if p is not None and p.slots(block_size) <= budget_slots]
             for points in (decode, prefill, mixed, skew, packed)]
    order = []
    for i in range(max(map(len, kinds))):
        order += [points[i] for points in kinds if i < len(points)]
    return order


def _packed(spec: GridSpec, context: int, decodes: int) -> ProfilePoint | None:
    """As many fresh prompts of spec.packed_chunk tokens as fit beside `decodes` decodes at
    `context` tokens, within max_num_batched_tokens and, fewer decodes then, max_num_seqs
    sequences; None if fewer than two prompts fit, or no decode where some were asked for."""
    count = min((spec.max_num_batched_tokens - decodes) // spec.packed_chunk, spec.max_num_seqs)
    kept = min(decodes, spec.max_num_seqs - count)
    if count < 2 or (decodes and not kept):
        return None
    kind = "mixed" if kept else "prefill"
    return ProfilePoint(kind, spread(context, kept) if kept else (), 0, spec.packed_chunk, count)


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
