"""Speculative decoding in the GPU executor: drafts the target decodes itself, and the target's
greedy token at every verified position.

The engine models how many drafts the target accepts (harness.engine.decoding); what the
executor runs must still give the tokens plain greedy decoding gives, so that rollback and
verification are checked on real tokens. Before a verification the target decodes the
sequence's drafts itself, one decode step at a time for every sequence still drafting, outside
the step's timed work (a draft model's own cost is measured apart, benchmarks/
bench_spec_decode.py): each draft is the target's greedy token, as an ideal draft model's would
be. The verification then runs the last sampled token and the drafts as one chunk and samples
the target's greedy token after each of them (drafts + 1 rows), and those replace the drafts.
The engine's rollback keeps the accepted ones and the token after them (the bonus), so the
tokens a request ends with are plain greedy decoding's whatever the acceptance model chose. A
verified token that differs from its draft (the decode and the chunked path rounding apart on
a GPU) is counted.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.gpu.batching import DecodeWork, PrefillWork, layout_step, to_device
from harness.gpu.device_tables import DeviceTables
from harness.gpu.host_state import TokenStore
from kernels.work_list import plan_for


@dataclass(frozen=True)
class Verification:
    """A sequence verifying drafts this step: rows start .. context - 1 (the last sampled
    token, then the drafts), its block table in row `row` of the executor's TableRows."""

    seq_id: int
    start: int
    context: int
    row: int

    @property
    def drafts(self) -> int:
        return self.context - self.start - 1

    def work(self, tokens: TokenStore) -> PrefillWork:
        """The verification as a chunk sampled at every row (its drafts drafted)."""
        return PrefillWork(self.seq_id, tokens.ids(self.seq_id)[self.start : self.context],
                           self.start, self.context, self.context - self.start)


class SelfDrafter:
    """Decodes the drafts of verifying sequences with the target (the executor's decode path:
    its CUDA graphs where they fit)."""

    def __init__(self, decoder, pool, graphs, *, by_segment: bool) -> None:
        self.decoder = decoder
        self.pool = pool
        self.graphs = graphs
        self.by_segment = by_segment
        self.device = decoder.weights.embed.device
        self.work_plan = decoder.work_list_plan(pool)

    def draft(self, verifications: list[Verification], tables: DeviceTables,
              tokens: TokenStore) -> None:
        """Append every verification's drafts to its tokens. tables: the executor's block
        tables, synced on the device with this step's (its new slots included)."""
        for i in range(max(v.drafts for v in verifications)):
            active = [v for v in verifications if v.drafts > i]
            ids = np.array([v.seq_id for v in active], np.int64)
            decode = DecodeWork(ids, tokens.last(ids),
                                np.array([v.start + 1 + i for v in active], np.int64))
            rows = np.array([v.row for v in active], np.int64)
            tokens.append(ids, self._decode(decode, rows, tables).cpu().numpy())

    def _decode(self, decode: DecodeWork, rows: np.ndarray,
                tables: DeviceTables) -> torch.Tensor:
        graphs = self.graphs
        work = plan_for(self.work_plan, decode.context_lens)
        if graphs is not None and graphs.fits(decode):
            graphs.stage(decode, rows, tables.host.array, work is not None)
            graphs.prepare()
            return graphs.run()
        host = layout_step([], decode, rows, tables.host.array, self.pool.block_size)
        step = to_device(host, self.pool, tables, self.device, by_segment=self.by_segment,
                         work_plan=work)
        return self.decoder.next_tokens(step, self.pool)


def keep_sampled(tokens: TokenStore, verifications: list[Verification], sampled: np.ndarray,
                 next_tokens: np.ndarray) -> int:
    """Append the step's sampled tokens, a verification's in place of its drafts; returns how
    many verified tokens differ from their drafts."""
    if not verifications:
        tokens.append(sampled, next_tokens)
        return 0
    drafted = [tokens.ids(v.seq_id)[v.start + 1 :].copy() for v in verifications]
    verified = np.isin(sampled, [v.seq_id for v in verifications])
    tokens.append(sampled[~verified], next_tokens[~verified])
    for v in verifications:  # every row of a verification sampled, in order
        tokens.truncate(v.seq_id, v.start + 1)
        tokens.extend(v.seq_id, next_tokens[sampled == v.seq_id])
    return sum(int(np.count_nonzero(tokens.ids(v.seq_id)[v.start + 1 : v.context] != d))
               for v, d in zip(verifications, drafted))
