"""One measured run: the engine with a GpuExecutor, and the tables `kvharness simulate` writes
plus the kv_allocated_bytes column (device memory the KV pool held after each step)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.config import RunConfig
from harness.engine import RunResult, simulate
from harness.gpu.executor import GpuExecutor
from harness.gpu.model import Decoder


def run_on_device(
    config: RunConfig, trace: pd.DataFrame, decoder: Decoder, *, progress: bool = False
) -> tuple[RunResult, GpuExecutor]:
    """Replay the trace with measured step times; returns the result and the executor (its
    outputs() are the generated tokens)."""
    made: list[GpuExecutor] = []

    def factory(cfg: RunConfig, allocator) -> GpuExecutor:
        made.append(GpuExecutor(cfg, allocator, decoder=decoder, trace=trace))
        return made[0]

    result = simulate(config, trace, progress=progress, executor_factory=factory)
    executor = made[0]
    result.steps["kv_allocated_bytes"] = np.asarray(executor.kv_bytes_per_step, dtype=np.int64)
    result.summary["peak_kv_allocated_bytes"] = int(max(executor.kv_bytes_per_step, default=0))
    return result, executor
