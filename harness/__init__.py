"""kvharness: the engine that replays request traces through KV-cache allocators.

`simulate(config, trace) -> RunResult` runs one configuration; `write_run(result, out_dir)`
writes its steps.parquet, requests.parquet and run.json. Names load on first use, so that the CLI and
harness.gpu stay cheap to import.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "AllocatorConfig": "harness.model.config",
    "ConfigError": "harness.model.config",
    "RunConfig": "harness.model.config",
    "SchedulerConfig": "harness.model.config",
    "RunResult": "harness.engine.loop",
    "simulate": "harness.cluster.run",  # one replica or several behind a router
    "write_run": "harness.engine.recorder",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
