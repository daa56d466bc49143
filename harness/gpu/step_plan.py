"""What one engine batch asks of the GPU executor, read on the host and checked against the
tokens the executor holds: prefill chunks, verifications of drafts, decode rows, and the rows of
their block tables (updated from the batch) in that order."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from harness.gpu.batching import DecodeWork, PrefillWork
from harness.gpu.host_state import TableRows, TokenStore
from harness.gpu.speculative import Verification


class ExecutorError(RuntimeError):
    """The batch disagrees with what the executor knows of a sequence (an engine bug)."""


def plan_step(seqs: Sequence, tokens: TokenStore, tables: TableRows
              ) -> tuple[list[PrefillWork], list[Verification], DecodeWork, np.ndarray]:
    """The step's work from the batch's sequences (harness.engine.batch): prefill chunks,
    verifications of drafts (drafted later), decode rows, and the rows of their block tables in
    TableRows in that order. The decode rows, most of a step's sequences, are read and checked
    in numpy; prefill chunks and verifications one by one."""
    ids = [seq.seq_id for seq in seqs]
    rows = tables.update(ids, [seq.block_table for seq in seqs])
    seq_ids = np.array(ids, np.int64)
    contexts = np.array([seq.context_tokens for seq in seqs], np.int64)
    have = tokens.lengths(seq_ids)
    others = [i for i, seq in enumerate(seqs) if seq.is_prefill or seq.num_new_tokens > 1]
    decoding = np.ones(len(seqs), bool)
    decoding[others] = False
    wrong = (decoding & (have != contexts)).nonzero()[0]
    if len(wrong):
        i = wrong[0]
        raise ExecutorError(f"seq {seq_ids[i]}: decode to {contexts[i]} with {have[i]} tokens")
    prefills: list[PrefillWork] = []
    verifications: list[Verification] = []
    pre_rows: list[int] = []
    for i in others:
        seq, row = seqs[i], int(rows[i])
        sid, context, count = seq.seq_id, seq.context_tokens, int(have[i])
        if seq.is_prefill:
            if count < context or (seq.samples and count != context):
                raise ExecutorError(f"seq {sid}: prefill to {context} of {count} tokens")
            prefills.append(PrefillWork(sid, tokens.ids(sid)[seq.start:context], seq.start,
                                        context, int(seq.samples)))
            pre_rows.append(row)
        else:  # a verification: the last token, then the drafts
            if count != seq.start + 1:
                raise ExecutorError(f"seq {sid}: verify from {seq.start} with {count} tokens")
            verifications.append(Verification(sid, seq.start, context, row))
    if others:
        seq_ids, contexts = seq_ids[decoding], contexts[decoding]
        firsts = np.array(pre_rows + [v.row for v in verifications], np.int64)
        rows = np.concatenate([firsts, rows[decoding]])
    return prefills, verifications, DecodeWork(seq_ids, tokens.last(seq_ids), contexts), rows
