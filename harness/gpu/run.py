"""One measured run: the engine with a GpuExecutor, writing the tables of `kvharness simulate`
plus the kv_allocated_bytes column (the recorder reads the executor's pool after each step)."""
from __future__ import annotations

import gc

import pandas as pd

from harness.model.config import RunConfig
from harness.engine.executor import KVGeometry
from harness.engine.loop import RunResult, simulate
from harness.gpu.executor import GpuExecutor
from harness.gpu.model import Decoder


def run_on_device(
    config: RunConfig, trace: pd.DataFrame, decoder: Decoder, *, progress: bool = False
) -> tuple[RunResult, GpuExecutor]:
    """Replay the trace with measured step times; returns the result and the executor (its
    outputs() are the generated tokens)."""
    made: list[GpuExecutor] = []

    def factory(cfg: RunConfig, geometry: KVGeometry) -> GpuExecutor:
        made.append(GpuExecutor(cfg, geometry, decoder=decoder, trace=trace))
        return made[0]

    # Objects alive before the run (weights, modules, the trace, imported libraries) move out
    # of the collector's reach, so a full collection walks only what the run creates: one over
    # everything pauses the host long enough to stall the GPU if it falls in a timed step's
    # launches. vLLM freezes after startup for the same reason. And the collector stays off
    # until the run ends: its automatic collections still paused the host for 0.3 ms on
    # average and up to 5 ms, a third of them inside a step, on the Azure run through paged
    # (benchmarks/probe_gc_pauses.py on an H200), while a run leaves almost nothing for it to
    # find (reference counting frees the rest; a 40-step CPU run left 12 objects in cycles),
    # which the collection after the run gathers.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        result = simulate(config, trace, progress=progress, executor_factory=factory)
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()
    return result, made[0]
