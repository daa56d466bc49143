"""What the engine asks of an executor, and the cost-model executor that prices steps.

The engine hands the executor one Batch per step and advances its clock by the seconds the
executor returns. The cost-model executor prices the batch with the model fitted to the GPU's
measured profile when one exists for the run's model and GPU (harness.model.fitted), else with
the roofline of costmodel.py; run.json's executor_details["cost_model"] says which. A
GPU executor runs it on the device and returns the measured time. Both are built by a factory
`(config, geometry) -> Executor`: they learn the KV geometry, never the allocator; what changes
in memory reaches them in the batch.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from allocators import spec_of
from harness.engine.batch import Batch
from harness.engine.decoding import DRAFT_MODEL
from harness.model.config import RunConfig
from harness.model.presets import model_preset
from harness.model.costmodel import (
    COMPUTE_EFFICIENCY,
    MEMORY_EFFICIENCY,
    CostModel,
    decode_bandwidth_ratio,
    decode_efficiency,
)
from harness.model.allreduce import measured_allreduce
from harness.model.fitted import fitted_cost_model
from reports.schema import DEFAULT_KV_DTYPE


@dataclass(frozen=True)
class KVGeometry:
    """The allocator's physical layout, fixed for its life: a KV pool sizes its segment
    tensors from it before any sequence exists."""

    block_size: int
    blocks_per_segment: int
    budget_slots: int
    host_tier_blocks: int = 0  # blocks of block_size slots in the prefix cache's host tier


class Executor(Protocol):
    """Runs or prices one step. `name` ("costmodel" | "gpu") and `device` go to run.json, and
    so does a `details` dict when the executor has one. An executor may also offer
    `decode_steps(decode_tokens, context_tokens, max_context) -> seconds per step` to price a
    run of decode-only steps at once (see CostModelExecutor); the engine then skips building their
    batches. Without it, step() sees every step. `needs_layouts`: batches must carry block
    tables and segment changes (an executor holding real KV)."""

    name: str
    device: str | None
    needs_layouts: bool

    def step(self, batch: Batch) -> float:
        """Seconds the step takes."""
        ...


ExecutorFactory = Callable[[RunConfig, KVGeometry], Executor]


class CostModelExecutor:
    """Prices a step with the fitted cost model, or the roofline where no profile exists (or
    with roofline=True); never touches a device. results_dir: where measured tables are (the
    package's by default)."""

    name = "costmodel"
    device = None
    needs_layouts = False

    def __init__(
        self, config: RunConfig, geometry: KVGeometry, *, results_dir: Path | None = None,
        roofline: bool = False,
    ) -> None:
        ratio, ratio_source = decode_bandwidth_ratio(config.kv_dtype, config.gpu.name,
                                                     geometry.block_size, results_dir=results_dir)
        # Only a run of another KV dtype says so: a bf16 run's run.json stays as it was.
        kv_details = {} if config.kv_dtype == DEFAULT_KV_DTYPE else {
            "kv_decode_bandwidth_ratio": ratio, "kv_decode_source": ratio_source}
        fitted = None if roofline else fitted_cost_model(
            config, geometry.block_size, results_dir=results_dir, decode_bandwidth_ratio=ratio)
        if fitted is not None:
            self.model = fitted
            self.details = {**fitted.details(), **kv_details}
            return
        efficiency, source = decode_efficiency(
            config.gpu.name,
            geometry.block_size,
            contiguous=spec_of(config.allocator.name).needs_contiguity,
            results_dir=results_dir,
        )
        allreduce = measured_allreduce(config.gpu.name, config.tp, results_dir=results_dir)
        self.model = CostModel.from_config(config, decode_efficiency=efficiency * ratio,
                                           allreduce=allreduce)
        self._config = config
        self._draft: CostModel | None = None  # built by the first step that drafts
        self.details = {
            "cost_model": "roofline",
            "decode_efficiency": efficiency,
            "efficiency_source": source,
            "memory_efficiency": MEMORY_EFFICIENCY,
            "compute_efficiency": COMPUTE_EFFICIENCY,
            "step_overhead_s": self.model.step_overhead_s,
        }
        if config.tp > 1:  # None: the datasheet guess priced the all-reduces
            self.details["allreduce_source"] = allreduce.source if allreduce else None
        self.details.update(kv_details)

    def decode_steps(self, decode_tokens: int, context_tokens: np.ndarray,
                     max_context: np.ndarray) -> np.ndarray:
        """Seconds of decode-only steps of decode_tokens sequences reading context_tokens keys
        each, max_context of them the longest sequence's, equal to what step() returns for each
        of them (the engine's decode runs use this)."""
        return self.model.step_s(
            prefill_tokens=0,
            decode_tokens=decode_tokens,
            prefill_context_tokens=0,
            decode_context_tokens=context_tokens,
            decode_max_context=max_context,
            prefill_attention_pairs=0,
            maximum=np.maximum,
        )

    def step(self, batch: Batch) -> float:
        step_s = self.model.step_s(
            prefill_tokens=batch.prefill_tokens,
            decode_tokens=batch.decode_tokens,
            prefill_context_tokens=batch.prefill_context_tokens,
            decode_context_tokens=batch.decode_context_tokens,
            decode_max_context=batch.decode_max_context,
            prefill_attention_pairs=batch.prefill_attention_pairs,
            swap_tokens=batch.pcie_tokens,
        )
        if batch.draft_steps:
            step_s += self._draft_s(batch)
        return step_s

    def _draft_s(self, batch: Batch) -> float:
        """The draft model's decode steps before verification, priced by the same roofline for
        the draft's shape (its own KV is not in the budget): each step decodes the sequences
        still drafting; averaged over the steps, as the batch gives totals."""
        if self._draft is None:
            draft_config = dataclasses.replace(self._config, model=model_preset(DRAFT_MODEL))
            self._draft = CostModel.from_config(draft_config)
            self.details["draft_model"] = DRAFT_MODEL
        steps = batch.draft_steps
        return steps * self._draft.step_s(
            prefill_tokens=0,
            decode_tokens=batch.draft_tokens / steps,
            prefill_context_tokens=0,
            decode_context_tokens=batch.draft_context_tokens / steps,
            prefill_attention_pairs=0,
        )
