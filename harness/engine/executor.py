"""What the engine asks of an executor, and the cost-model executor that prices steps.

The engine hands the executor one Batch per step and advances its clock by the seconds the
executor returns. The cost-model executor prices the batch with the roofline of costmodel.py; a
GPU executor runs it on the device and returns the measured time. Both are built by a factory
`(config, allocator) -> Executor`, so a GPU executor can read sequence layouts from the allocator.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Protocol

import numpy as np

from allocators import Allocator
from harness.model.config import RunConfig
from harness.model.costmodel import (
    COMPUTE_EFFICIENCY,
    DEFAULT_RESULTS_DIR,
    MEMORY_EFFICIENCY,
    CostModel,
    decode_efficiency,
)


class ScheduledSeq(NamedTuple):
    """One sequence's work in a step: num_new_tokens tokens whose K/V are written this step,
    attending to context_tokens tokens (its KV length once they are written). samples: the
    step samples the sequence's next token (every decode; the prefill chunk that ends it)."""

    seq_id: int
    request_id: int
    num_new_tokens: int
    context_tokens: int
    is_prefill: bool
    samples: bool


class Batch:
    """One engine step: the scheduled sequences, what happened to sequences since the previous
    batch, and the aggregates a cost model needs.

    The scheduler fills `entries` with plain tuples in ScheduledSeq order; `seqs` builds the
    named tuples on first use, so an executor that prices aggregates pays nothing for them.
    swap_in/out_tokens are KV tokens moved over PCIe.

    Sequence lifecycle, told outright so that an executor holding real KV need not infer it, in
    the order an executor applies it (events of steps that ran nothing arrive with the next):
    - forks: (parent, child) pairs forked (the child shares the parent's KV as written);
    - swapped_out: sequences whose written KV goes to the host; their slots are freed and may be
      reused by this very step, so their KV must be read first;
    - preempted: (seq_id, kept_tokens) freed for recompute: the KV is gone, and the request
      keeps its first kept_tokens tokens (prompt and samples) to prefill again;
    - finished: sequences freed for good (completed or rejected; a rejected one may be swapped);
    - swapped_in: sequences given new slots this step, into which their host KV comes back.
    """

    __slots__ = (
        "entries",
        "forks",
        "swapped_out",
        "preempted",
        "finished",
        "swapped_in",
        "prefill_tokens",
        "decode_tokens",
        "prefill_context_tokens",
        "decode_context_tokens",
        "prefill_attention_pairs",
        "swap_in_tokens",
        "swap_out_tokens",
        "_seqs",
    )

    def __init__(self) -> None:
        self.entries: list[tuple[int, int, int, int, bool, bool]] = []
        self.forks: list[tuple[int, int]] = []
        self.swapped_out: list[int] = []
        self.preempted: list[tuple[int, int]] = []
        self.finished: list[int] = []
        self.swapped_in: list[int] = []
        self.prefill_tokens = 0
        self.decode_tokens = 0
        self.prefill_context_tokens = 0
        self.decode_context_tokens = 0
        self.prefill_attention_pairs = 0  # sum over prefill tokens of the keys each attends to
        self.swap_in_tokens = 0
        self.swap_out_tokens = 0
        self._seqs: tuple[ScheduledSeq, ...] | None = None

    @property
    def seqs(self) -> tuple[ScheduledSeq, ...]:
        if self._seqs is None:
            self._seqs = tuple(map(ScheduledSeq._make, self.entries))
        return self._seqs

    @property
    def num_tokens(self) -> int:
        return self.prefill_tokens + self.decode_tokens

    @property
    def has_work(self) -> bool:
        """Whether the step computes or moves anything (else it is not run)."""
        return bool(self.entries or self.swap_in_tokens or self.swap_out_tokens)

    def add_prefill(
        self, seq_id: int, request_id: int, start: int, num_tokens: int, *, samples: bool
    ) -> None:
        """Prefill tokens [start, start + num_tokens) of a sequence."""
        context = start + num_tokens
        self.entries.append((seq_id, request_id, num_tokens, context, True, samples))
        self.prefill_tokens += num_tokens
        self.prefill_context_tokens += context
        self.prefill_attention_pairs += num_tokens * start + num_tokens * (num_tokens + 1) // 2


class Executor(Protocol):
    """Runs or prices one step. `name` ("costmodel" | "gpu") and `device` go to run.json, and
    so does a `details` dict when the executor has one. An executor may also offer
    `decode_steps(decode_tokens, context_tokens) -> seconds per step` to price a run of
    decode-only steps at once (see CostModelExecutor); the engine then skips building their
    batches. Without it, step() sees every step."""

    name: str
    device: str | None

    def step(self, batch: Batch) -> float:
        """Seconds the step takes."""
        ...


ExecutorFactory = Callable[[RunConfig, Allocator], Executor]


class CostModelExecutor:
    """Prices a step with the roofline cost model; never touches a device."""

    name = "costmodel"
    device = None

    def __init__(
        self, config: RunConfig, allocator: Allocator, *, results_dir: Path = DEFAULT_RESULTS_DIR
    ) -> None:
        efficiency, source = decode_efficiency(
            config.gpu.name,
            allocator.block_size,
            contiguous=config.allocator.name == "static",
            results_dir=results_dir,
        )
        self.model = CostModel.from_config(config, decode_efficiency=efficiency)
        self.details = {
            "decode_efficiency": efficiency,
            "efficiency_source": source,
            "memory_efficiency": MEMORY_EFFICIENCY,
            "compute_efficiency": COMPUTE_EFFICIENCY,
            "step_overhead_s": self.model.step_overhead_s,
        }

    def decode_steps(self, decode_tokens: int, context_tokens: np.ndarray) -> np.ndarray:
        """Seconds of decode-only steps of decode_tokens sequences reading context_tokens each,
        equal to what step() returns for each of them (the engine's decode runs use this)."""
        return self.model.step_s(
            prefill_tokens=0,
            decode_tokens=decode_tokens,
            prefill_context_tokens=0,
            decode_context_tokens=context_tokens,
            prefill_attention_pairs=0,
            maximum=np.maximum,
        )

    def step(self, batch: Batch) -> float:
        return self.model.step_s(
            prefill_tokens=batch.prefill_tokens,
            decode_tokens=batch.decode_tokens,
            prefill_context_tokens=batch.prefill_context_tokens,
            decode_context_tokens=batch.decode_context_tokens,
            prefill_attention_pairs=batch.prefill_attention_pairs,
            swap_tokens=batch.swap_in_tokens + batch.swap_out_tokens,
        )
