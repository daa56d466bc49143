"""kvharness: the engine that replays request traces through KV-cache allocators.

`simulate(config, trace) -> RunResult` runs one configuration; `write_run(result, out_dir)`
writes its steps.csv, requests.csv and run.json. Names load on first use, so that the CLI and
harness.gpu stay cheap to import.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "AllocatorConfig": "harness.config",
    "ConfigError": "harness.config",
    "RunConfig": "harness.config",
    "SchedulerConfig": "harness.config",
    "RunResult": "harness.engine",
    "simulate": "harness.engine",
    "write_run": "harness.recorder",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
