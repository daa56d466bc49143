"""One row per executed step of a GPU run: what the step held and where its time went.

The benchmark bins steps by kind and size and prices each against its hardware floor from
these rows; the engine's steps table keeps the columns every executor shares.
"""
from __future__ import annotations

from dataclasses import astuple, dataclass, fields

import pandas as pd


@dataclass(frozen=True, slots=True)
class StepRecord:
    """decode_seqs: sequences decoding one token; verify_seqs: sequences verifying drafts, in
    verify_tokens rows (the last token and the drafts of each, every row sampled);
    decode_context_tokens: the KV length of both, decode_max_context the longest of them.
    step_s: CUDA-event time of the device work; host_prep_s: host work before it (the
    scheduler's not included) and after it (the sampled tokens kept), host_prep_cpu_s the
    thread's CPU time in it (less by the time it was off its core); of it, plan_s reading the
    batch and updating the block tables (harness.gpu.step_plan), stage_s laying the step out
    and staging it for a graph, rollback_s applying the last step's rollbacks; enqueue_s:
    host time from the start event to the last launch (close to step_s when the host, not the
    device, sets the pace)."""

    graph: bool
    decode_seqs: int
    decode_context_tokens: int
    decode_max_context: int
    prefill_seqs: int
    prefill_tokens: int
    prefill_context_tokens: int
    prefill_attention_pairs: int
    verify_seqs: int
    verify_tokens: int
    host_prep_s: float
    host_prep_cpu_s: float
    plan_s: float
    stage_s: float
    rollback_s: float
    enqueue_s: float
    step_s: float


STEP_LOG_COLUMNS = tuple(f.name for f in fields(StepRecord))


class StepLog:
    def __init__(self) -> None:
        self._rows: list[StepRecord] = []

    def append(self, record: StepRecord) -> None:
        self._rows.append(record)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([astuple(r) for r in self._rows], columns=list(STEP_LOG_COLUMNS))
