"""Turn one engine Batch into the tensors of one forward: vectorised over sequences.

Prefill chunks come first (their rows are contiguous per sequence), then one row per decoding
sequence. Host work is numpy over whole arrays; the small int64 metadata travels to the device
in one copy, the prefill and decode block tables (one array) in a second, the slot ids (split by
segment) in a third.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.gpu.kv_pool import KVPool
from harness.gpu.model import PrefillBatch, PrefillChunk, StepInputs


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


def pad_tables(tables: list[np.ndarray], num_blocks: np.ndarray, width: int = 0) -> np.ndarray:
    """[B, W] int32, row i holding the first num_blocks[i] entries of tables[i] (zeros after);
    W is max(num_blocks, width) rounded up to a multiple of TABLE_WIDTH_MULTIPLE."""
    width = max(int(num_blocks.max(initial=0)), width, 1)
    width = -(-width // TABLE_WIDTH_MULTIPLE) * TABLE_WIDTH_MULTIPLE
    out = np.zeros((len(tables), width), dtype=np.int32)
    if tables:
        used = np.arange(width) < num_blocks[:, None]
        out[used] = np.concatenate([t[:n] for t, n in zip(tables, num_blocks.tolist())])
    return out


def ragged_arange(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) without the loop."""
    lengths = ends - starts
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def build_step(
    prefills: list[PrefillWork], decode: DecodeWork, pool: KVPool, device: torch.device
) -> tuple[StepInputs, list[int]]:
    """The StepInputs of a step and the seq ids of its logit rows, in row order."""
    bs = pool.block_size
    num_pre_seqs, num_decode = len(prefills), len(decode.seq_ids)
    starts = np.fromiter((w.start for w in prefills), np.int64, num_pre_seqs)
    contexts = np.fromiter((w.context for w in prefills), np.int64, num_pre_seqs)
    lens = decode.context_lens.astype(np.int64)
    # Prefill and decode block tables in one array of one width: one copy to the device.
    tables = pad_tables([w.block_table for w in prefills] + list(decode.block_tables),
                        np.concatenate([(contexts + bs - 1) // bs, (lens + bs - 1) // bs]))
    query_starts = np.concatenate([[0], np.cumsum(contexts - starts)])
    num_prefill = int(query_starts[-1])
    rows_of_seq = np.repeat(np.arange(num_pre_seqs), contexts - starts)
    positions = np.concatenate([ragged_arange(starts, contexts), lens - 1])
    table_rows = np.concatenate([rows_of_seq, np.arange(num_pre_seqs, num_pre_seqs + num_decode)])
    slots = tables[table_rows, positions // bs].astype(np.int64) * bs + positions % bs
    sampled_pre = np.fromiter((w.sample for w in prefills), bool, num_pre_seqs)
    logit_rows = np.concatenate([query_starts[1:][sampled_pre] - 1,
                                 np.arange(num_prefill, num_prefill + num_decode)])
    sampled = [w.seq_id for w in prefills if w.sample] + list(decode.seq_ids)
    ids = np.concatenate([w.tokens for w in prefills] + [decode.tokens.astype(np.int64)])

    total, n_rows = len(ids), len(logit_rows)
    meta = np.concatenate([ids, positions, logit_rows, query_starts, contexts, lens])
    meta = torch.from_numpy(meta.astype(np.int64)).to(device, non_blocking=True)
    small = meta[2 * total + n_rows :].to(torch.int32)  # query starts, prefill and decode lens
    tables_dev = torch.from_numpy(tables).to(device, non_blocking=True)
    prefill_batch = None
    if num_pre_seqs:
        prefill_batch = PrefillBatch(
            query_starts=small[: num_pre_seqs + 1],
            context_lens=small[num_pre_seqs + 1 : 2 * num_pre_seqs + 1],
            block_tables=tables_dev[:num_pre_seqs],
        )
    chunks = tuple(PrefillChunk(int(a), int(b - a), int(c)) for a, b, c in
                   zip(query_starts[:-1], query_starts[1:], starts))
    step = StepInputs(
        input_ids=meta[:total],
        positions=meta[total : 2 * total],
        slot_mapping=pool.index(slots),
        prefills=chunks,
        num_prefill_tokens=num_prefill,
        block_tables=tables_dev[num_pre_seqs:],
        context_lens=small[2 * num_pre_seqs + 1 :],
        logit_rows=meta[2 * total : 2 * total + n_rows],
        prefill_batch=prefill_batch,
    )
    return step, sampled
