"""Turn one engine Batch into the tensors of one forward: vectorised over sequences.

Prefill chunks come first (their rows are contiguous per sequence), then one row per decoding
sequence. layout_step does the host work (numpy over whole arrays, before the step is timed);
to_device moves it: the int64 rows in one copy, the int32 per-sequence lengths in a second, the
slot ids in a third; the prefill and decode block tables are gathered from the executor's
tables on the device (harness/gpu/device_tables.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.gpu.device_tables import DeviceTables
from harness.gpu.host_state import ragged_arange, round_width
from harness.gpu.kv_pool import KVPool
from harness.gpu.model import PrefillBatch, PrefillChunk, StepInputs
from kernels.work_list import DecodeWorkList, WorkListPlan


@dataclass(frozen=True)
class PrefillWork:
    """Rows start..context-1 of a sequence's tokens; samples: how many of its last rows give a
    next token (1 where the chunk ends a prefill, every row of a verification of drafts)."""

    seq_id: int
    tokens: np.ndarray  # int64 [context - start]
    start: int
    context: int
    samples: int


@dataclass(frozen=True)
class DecodeWork:
    """One token per sequence: input token ids and KV lengths once written."""

    seq_ids: np.ndarray  # int64 [B]
    tokens: np.ndarray  # int64 [B]
    context_lens: np.ndarray  # int64 [B]


@dataclass(frozen=True)
class HostStep:
    """One step laid out on the host: rows of the forward, their slots, the block tables."""

    ids: np.ndarray  # int64 [T]
    positions: np.ndarray  # int64 [T]
    slots: np.ndarray  # int64 [T]
    logit_rows: np.ndarray  # int64 [S]
    query_starts: np.ndarray  # int64 [P + 1]
    prefill_contexts: np.ndarray  # int64 [P]
    chunk_starts: np.ndarray  # int64 [P]: context before each chunk
    decode_lens: np.ndarray  # int64 [D]
    table_rows: np.ndarray  # int64 [P + D]: each sequence's row of TableRows, prefills first
    table_width: int  # block-table entries the step reads, rounded up to a multiple of 16
    sampled: np.ndarray  # int64 [S]: seq ids of the logit rows


def slots_of(block_table: np.ndarray, positions: np.ndarray, block_size: int) -> np.ndarray:
    """int64 global slot ids of token positions: block_table[pos // bs] * bs + pos % bs."""
    if block_size & (block_size - 1):
        blocks = block_table[positions // block_size].astype(np.int64)
        return blocks * block_size + positions % block_size
    # A power of two (every allocator's default): shifts and masks, over twice as fast as
    # int64 division at a prefill's thousands of positions.
    shift = block_size.bit_length() - 1
    slots = block_table[positions >> shift].astype(np.int64)
    slots <<= shift
    slots |= positions & (block_size - 1)
    return slots


def table_slots(tables: np.ndarray, rows: np.ndarray, positions: np.ndarray,
                block_size: int) -> np.ndarray:
    """Global slot ids of token positions, each in the block table of its row of tables
    (TableRows.array): slots_of over the flat array, each position moved to its row's table (a
    flat take: a fancy index over two axes costs more)."""
    return slots_of(tables.reshape(-1), rows * (tables.shape[1] * block_size) + positions,
                    block_size)


def layout_step(prefills: list[PrefillWork], decode: DecodeWork, table_rows: np.ndarray,
                tables: np.ndarray, block_size: int) -> HostStep:
    """The rows of a step. table_rows: each sequence's row of tables (TableRows.array), the
    prefills' first. The decode rows are laid out first, the prefill chunks (where there are
    any) put before them."""
    bs = block_size
    table_rows = np.asarray(table_rows, np.int64)
    num_pre_seqs = len(prefills)
    lens = np.asarray(decode.context_lens, np.int64)
    ids = np.asarray(decode.tokens, np.int64)
    positions = lens - 1
    rows = table_rows[num_pre_seqs:]  # each token's row of tables
    logit_rows = np.arange(len(lens))
    sampled = np.asarray(decode.seq_ids, np.int64)
    starts = contexts = np.zeros(0, np.int64)
    query_starts = np.zeros(1, np.int64)
    if prefills:
        starts = np.array([w.start for w in prefills], np.int64)
        contexts = np.array([w.context for w in prefills], np.int64)
        samples = np.array([w.samples for w in prefills], np.int64)
        query_starts = np.concatenate([query_starts, (contexts - starts).cumsum()])
        ends = query_starts[1:]
        ids = np.concatenate([w.tokens for w in prefills] + [ids])
        positions = np.concatenate([ragged_arange(starts, contexts), positions])
        rows = np.concatenate([table_rows[:num_pre_seqs].repeat(contexts - starts), rows])
        logit_rows = np.concatenate([ragged_arange(ends - samples, ends),
                                     logit_rows + ends[-1]])
        pre_ids = np.array([w.seq_id for w in prefills], np.int64)
        sampled = np.concatenate([pre_ids.repeat(samples), sampled])
    slots = table_slots(tables, rows, positions, bs)
    longest = max(int(lens.max(initial=1)), int(contexts.max(initial=1)))
    return HostStep(ids, positions, slots, logit_rows, query_starts, contexts, starts, lens,
                    table_rows, round_width(-(-longest // bs)), sampled)


def to_device(host: HostStep, pool: KVPool, tables: DeviceTables, device: torch.device,
              by_segment: bool = True, work_plan: WorkListPlan | None = None) -> StepInputs:
    """The StepInputs of a laid-out step (by_segment: the backend indexes slots per segment;
    work_plan: the decode rows' work list is built, Decoder.work_list_plan); tables must be
    synced."""
    num_pre_seqs = len(host.prefill_contexts)
    total, n_rows = len(host.ids), len(host.logit_rows)
    meta = np.concatenate([host.ids, host.positions, host.logit_rows, host.table_rows])
    meta = torch.from_numpy(meta.astype(np.int64)).to(device, non_blocking=True)
    num_decode = len(host.decode_lens)
    balanced = work_plan is not None and num_decode > 0
    work = [work_plan.build(host.decode_lens)] if balanced else []
    query_starts, prefill_lens, decode_lens, *work = _aligned_int32(
        [host.query_starts, host.prefill_contexts, host.decode_lens] + work, device)
    tables_dev = tables.gather(meta[2 * total + n_rows :], host.table_width)
    prefill_batch = None
    if num_pre_seqs:
        prefill_batch = PrefillBatch(query_starts=query_starts, context_lens=prefill_lens,
                                     block_tables=tables_dev[:num_pre_seqs])
    qs = host.query_starts.tolist()
    chunks = tuple(PrefillChunk(a, b - a, c) for a, b, c in
                   zip(qs[:-1], qs[1:], host.chunk_starts.tolist()))
    return StepInputs(
        input_ids=meta[:total],
        positions=meta[total : 2 * total],
        slot_mapping=pool.index(host.slots, by_segment=by_segment),
        prefills=chunks,
        num_decode_rows=total - int(qs[-1]),
        block_tables=tables_dev[num_pre_seqs:],
        context_lens=decode_lens,
        logit_rows=meta[2 * total : 2 * total + n_rows],
        prefill_batch=prefill_batch,
        decode_work=DecodeWorkList(work_plan, num_decode, work[0]) if balanced else None,
    )


def _aligned_int32(parts: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """Int32 arrays on the device in one copy, each starting on a 16-byte boundary: Triton
    specialises a kernel on its pointers' alignment, so a misaligned slice would compile a new
    variant (seconds) inside a timed step the first time a sequence count shifts it."""
    lengths = [len(p) for p in parts]
    starts = np.concatenate([[0], np.cumsum([round_width(n, 4) for n in lengths])])
    packed = np.zeros(int(starts[-1]), dtype=np.int32)
    for part, start in zip(parts, starts.tolist()):
        packed[start : start + len(part)] = part
    dev = torch.from_numpy(packed).to(device, non_blocking=True)
    return [dev[s : s + n] for s, n in zip(starts.tolist(), lengths)]
