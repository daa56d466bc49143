"""The title page: what was run (traces, model, GPU, KV budget, scheduler, executor), with which
software, when the report was built, and how to read the figures that follow."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any, Callable

from matplotlib.figure import Figure

from reports.load import Run
from reports.textpage import bullet, heading, para, text_pages
from reports.units import count, gib, is_number

READING_GUIDE = (
    "Memory figures are in KV slots (one slot = the K and V of one token in every layer) and "
    "shares of *backed* memory (slots with physical memory behind them now). Utilization = live "
    "token state / backed memory. Waste is split into reserved (allocated for tokens that will be "
    "written later), internal (allocated and never written), external (free but fragmented: "
    "free x external_fragmentation), prefix cache (evictable) and free. Times are simulated "
    "seconds of the run, not wall-clock. Each trace has its own section comparing the allocators; "
    "the verdict page comes first."
)


def _distinct(runs: list[Run], describe: Callable[[Run], str]) -> str:
    values = list(dict.fromkeys(describe(run) for run in runs))
    return "; ".join(values) if values else "n/a"


def _model(run: Run) -> str:
    model: dict[str, Any] = run.config.get("model") or {}
    if not model:
        return "unknown model"
    shape = ", ".join(f"{label} {model[key]}" for key, label in (
        ("num_layers", "layers"), ("num_kv_heads", "KV heads"), ("head_dim", "head dim"),
        ("dtype_bytes", "bytes/elem")) if key in model)
    return f"{model.get('name', 'unnamed')} ({shape})" if shape else str(model.get("name"))


def _gpu(run: Run) -> str:
    gpu: dict[str, Any] = run.config.get("gpu") or {}
    tp = run.config.get("tp")
    text = str(gpu.get("name", "unknown GPU"))
    if is_number(gpu.get("memory_bytes")):
        text += f" ({gib(gpu['memory_bytes'])})"
    return text + (f", tensor parallel {tp}" if tp else "")


def _budget(run: Run) -> str:
    slots = run.figure("budget_slots")
    per_token = run.figure("bytes_per_token")
    text = (f"{count(slots)} slots x {count(per_token)} B/token ({run.kv_dtype}) = "
            f"{gib(slots * per_token)}")
    util = run.config.get("gpu_memory_utilization")
    return text + (f" (gpu_memory_utilization {util})" if util is not None else "")


def _scheduler(run: Run) -> str:
    scheduler: dict[str, Any] = run.config.get("scheduler") or {}
    return ", ".join(f"{key} {value}" for key, value in scheduler.items()) or "n/a"


def _executor(run: Run) -> str:
    """The executor, its device, and the cost model that priced a simulated run."""
    device = run.meta.get("device")
    priced = (run.meta.get("executor_details") or {}).get("cost_model")
    return (str(run.meta.get("executor", "unknown")) + (f" on {device}" if device else "")
            + (f" (priced by {priced})" if priced else ""))


def _versions(run: Run) -> str:
    versions = run.meta.get("versions") or {}
    return ", ".join(f"{name} {version}" for name, version in versions.items()) or "n/a"


def _run_line(label: str, run: Run) -> str:
    counts = run.status_counts()
    status = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no requests"
    return f"{run.trace_name} / {label}: {run.num_requests} requests ({status}) - {run.path}"


def build_time() -> datetime:
    """When a report is built: SOURCE_DATE_EPOCH where it is set (the reproducible-builds
    convention, so that the same runs give a byte-identical PDF whenever it is built), else
    now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return datetime.now(timezone.utc)
    if not epoch.isdigit():
        raise ValueError(f"SOURCE_DATE_EPOCH must be whole seconds since 1970-01-01 UTC, got "
                         f"{epoch!r}")
    return datetime.fromtimestamp(int(epoch), timezone.utc)


def title_pages(groups: dict[str, list[tuple[str, Run]]], built: datetime | None = None,
                ablation: dict[str, list[tuple[str, Run]]] | None = None,
                other_kv_dtype: list[Run] = ()) -> list[Figure]:
    """other_kv_dtype: the KV dtype comparison's runs of another dtype than the study's."""
    runs = [run for labelled in groups.values() for _, run in labelled]
    built = built or build_time()
    traces = "; ".join(
        f"{trace} ({labelled[0][1].meta.get('trace', {}).get('source', 'unknown source')}, "
        f"{labelled[0][1].meta.get('trace', {}).get('rows', 'n/a')} requests)"
        for trace, labelled in groups.items())
    blocks = [
        heading("What was run"),
        bullet(f"Traces: {traces or 'none'}"),
        bullet(f"Model: {_distinct(runs, _model)}"),
        bullet(f"GPU: {_distinct(runs, _gpu)}"),
        bullet(f"KV budget: {_distinct(runs, _budget)}"),
        bullet(f"Scheduler: {_distinct(runs, _scheduler)}"),
        bullet(f"Executor: {_distinct(runs, _executor)}; seed "
               f"{_distinct(runs, lambda run: str(run.meta.get('seed', 'n/a')))}"),
        heading("Software"),
        bullet(f"Versions: {_distinct(runs, _versions)}"),
        heading("Runs"),
        *[bullet(_run_line(label, run)) for labelled in groups.values()
          for label, run in labelled],
        *([heading("Block-size ablation runs (shown on the ablation page only)")]
          + [bullet(_run_line(f"{run.allocator} bs={run.block_size}", run))
             for labelled in ablation.values() for _, run in labelled] if ablation else []),
        *([heading("KV dtype comparison runs (shown on the KV dtype page only)")]
          + [bullet(_run_line(f"{run.allocator} {run.kv_dtype} KV", run))
             for run in other_kv_dtype] if other_kv_dtype else []),
        heading("How to read this report"),
        para(READING_GUIDE),
    ]
    if not runs:
        blocks.insert(0, para("No run directories were given: this report has nothing to show."))
    subtitle = (f"Report built {built:%Y-%m-%d %H:%M} UTC from {len(runs)} run(s) over "
                f"{len(groups)} trace(s)")
    return text_pages("kvharness: KV-cache allocators on real traces", blocks, subtitle)
