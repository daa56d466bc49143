"""Turn one engine Batch into the tensors of one forward: vectorised over sequences.

Prefill chunks come first (their rows are contiguous per sequence), then one row per decoding
sequence. Host work is numpy over whole arrays; the small int64 metadata travels to the device
in one copy, the decode block tables in a second, the slot ids (split by segment) in a third.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.gpu.kv_pool import KVPool
from harness.gpu.model import PrefillChunk, StepInputs


@dataclass(frozen=True)
class PrefillWork:
    """Rows start..context-1 of a sequence's tokens; sample: the chunk ends its prefill."""

    seq_id: int
    tokens: np.ndarray  # int64 [context - start]
    start: int
    context: int
    block_table: np.ndarray  # int64 block ids
    sample: bool


@dataclass(frozen=True)
class DecodeWork:
    """One token per sequence: input token ids, KV lengths once written, block tables."""

    seq_ids: list[int]
    tokens: np.ndarray  # int64 [B]
    context_lens: np.ndarray  # int64 [B]
    block_tables: list[np.ndarray]


def slots_of(block_table: np.ndarray, positions: np.ndarray, block_size: int) -> np.ndarray:
    """Global slot ids of token positions: block_table[pos // bs] * bs + pos % bs."""
    return block_table[positions // block_size] * block_size + positions % block_size


TABLE_WIDTH_MULTIPLE = 16  # one kernel specialisation for the row stride (Triton: 16 | stride)


def pad_tables(tables: list[np.ndarray], num_blocks: np.ndarray) -> np.ndarray:
    """[B, W] int32, row i holding the first num_blocks[i] entries of tables[i]; W is
    max(num_blocks) rounded up to a multiple of TABLE_WIDTH_MULTIPLE."""
    width = int(num_blocks.max()) if len(tables) else 0
    width = -(-max(width, 1) // TABLE_WIDTH_MULTIPLE) * TABLE_WIDTH_MULTIPLE
    out = np.zeros((len(tables), width), dtype=np.int32)
    for row, (table, n) in enumerate(zip(tables, num_blocks.tolist())):
        out[row, :n] = table[:n]
    return out


def build_step(
    prefills: list[PrefillWork], decode: DecodeWork, pool: KVPool, device: torch.device
) -> tuple[StepInputs, list[int]]:
    """The StepInputs of a step and the seq ids of its logit rows, in row order."""
    bs = pool.block_size
    ids, positions, slots, chunks, rows, sampled = [], [], [], [], [], []
    start_row = 0
    for work in prefills:
        pos = np.arange(work.start, work.context, dtype=np.int64)
        ids.append(work.tokens)
        positions.append(pos)
        slots.append(slots_of(work.block_table, pos, bs))
        context_slots = None
        if work.start:
            prefix = np.arange(work.start, dtype=np.int64)
            context_slots = pool.index(slots_of(work.block_table, prefix, bs))
        chunks.append(PrefillChunk(start_row, len(pos), work.start, context_slots))
        start_row += len(pos)
        if work.sample:
            rows.append(start_row - 1)
            sampled.append(work.seq_id)
    num_prefill = start_row
    lens = decode.context_lens
    num_decode = len(decode.seq_ids)
    if num_decode:
        last = lens - 1
        ids.append(decode.tokens)
        positions.append(last)
        num_blocks = (lens + bs - 1) // bs
        tables = pad_tables(decode.block_tables, num_blocks)
        last_blocks = tables[np.arange(num_decode), last // bs].astype(np.int64)
        slots.append(last_blocks * bs + last % bs)
        rows.append(np.arange(num_prefill, num_prefill + num_decode))
        sampled.extend(decode.seq_ids)
    else:
        tables = np.zeros((0, TABLE_WIDTH_MULTIPLE), dtype=np.int32)
    ids_np = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    pos_np = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    rows_np = np.concatenate([np.atleast_1d(np.asarray(r, np.int64)) for r in rows]) \
        if rows else np.zeros(0, np.int64)
    total = len(ids_np)
    meta = torch.from_numpy(np.concatenate([ids_np, pos_np, rows_np, lens.astype(np.int64)]))
    meta = meta.to(device, non_blocking=True)
    n_rows = len(rows_np)
    step = StepInputs(
        input_ids=meta[:total],
        positions=meta[total : 2 * total],
        slot_mapping=pool.index(np.concatenate(slots) if slots else np.zeros(0, np.int64)),
        prefills=tuple(chunks),
        num_prefill_tokens=num_prefill,
        block_tables=torch.from_numpy(tables).to(device, non_blocking=True),
        context_lens=meta[2 * total + n_rows :].to(torch.int32),
        logit_rows=meta[2 * total : 2 * total + n_rows],
    )
    return step, sampled
