"""Read run directories (steps.parquet, requests.parquet, run.json) exactly as the results
contract writes them, and give each run the few derived facts every report page needs (trace, allocator, label).

Nothing here recomputes a memory figure: utilization, waste shares and latency percentiles come
from the engine's summary; the step and request tables feed the plots over time and the CDFs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from reports.schema import (REQUEST_COLUMNS, REQUESTS_FILE, RUN_JSON, STEP_COLUMNS, STEPS_FILE,
                            read_table)


@dataclass(frozen=True)
class AllocatorFacts:
    """What pages need to know about the allocators, handed in as plain data by the caller
    (the CLI reads it from the allocators' specs), so that reports import no allocator code.
    Empty, pages still draw: allocators by name, parameters under their own names."""

    order: tuple[str, ...] = ()  # every section lists allocators so; unlisted ones after, by name
    labels: Mapping[str, str] = field(default_factory=dict)  # parameter -> short label ("bs")
    # allocator -> the parameter that fixes every request's up-front reservation
    reservations: Mapping[str, str] = field(default_factory=dict)
    # allocator -> the bool parameter that, when true, makes it an oracle (it reserves what no
    # real engine knows); such runs are labelled "oracle" wherever they appear
    oracles: Mapping[str, str] = field(default_factory=dict)
    # allocator -> (its grain parameter, that parameter's default): a run at another grain
    # belongs to the block-size ablation, not to the allocator comparison
    grains: Mapping[str, tuple[str, Any]] = field(default_factory=dict)

    def rank(self, allocator: str) -> int:
        return self.order.index(allocator) if allocator in self.order else len(self.order)

    def label(self, param: str) -> str:
        return self.labels.get(param, param)

    def is_oracle(self, run: "Run") -> bool:
        key = self.oracles.get(run.allocator)
        return key is not None and _truthy(run.allocator_params.get(key))


def _truthy(value: Any) -> bool:
    """A bool parameter as run.json holds it (true, or "true" where a flag wrote a string)."""
    return value is True or str(value).strip().lower() in ("true", "1", "yes", "on")


NO_FACTS = AllocatorFacts()


class RunDirError(ValueError):
    """A run directory is missing a file or a column of the results contract."""


@dataclass(frozen=True)
class Run:
    """One run directory, loaded."""

    path: Path
    steps: pd.DataFrame
    requests: pd.DataFrame
    meta: dict[str, Any]  # run.json as written

    @property
    def config(self) -> dict[str, Any]:
        return self.meta.get("config") or {}

    @property
    def summary(self) -> dict[str, Any]:
        return self.meta.get("summary") or {}

    @property
    def trace_name(self) -> str:
        return str((self.meta.get("trace") or {}).get("name") or "unnamed trace")

    @property
    def allocator(self) -> str:
        return str(allocator_config(self.config).get("name", "unknown"))

    @property
    def allocator_params(self) -> dict[str, Any]:
        return allocator_params(self.config)

    @property
    def block_size(self) -> int | None:
        """The block size the run was configured with, None where the config leaves the default."""
        value = self.allocator_params.get("block_size")
        return int(value) if value is not None else None

    def figure(self, key: str) -> float:
        """A summary figure as a float; NaN where the summary has none (an empty run)."""
        value = self.summary.get(key)
        try:
            return float(value) if value is not None else float("nan")
        except (TypeError, ValueError):
            return float("nan")

    def waste_shares(self) -> dict[str, float]:
        """Time-weighted shares of backed memory: live, reserved, internal, external, cached,
        stale and free, summing to 1. Free is what the summary's other shares leave over, so it
        reads the same whether the engine counts fragmented free slots inside waste_free or
        not."""
        shares = {"live": self.figure("utilization_mean")}
        for key in ("reserved", "internal", "external", "cached", "stale"):
            shares[key] = self.figure(f"waste_{key}")
        if not all(np.isfinite(value) for value in shares.values()):
            return {key: float("nan") for key in (*shares, "free")}
        shares["free"] = max(0.0, 1.0 - sum(shares.values()))
        return shares

    @property
    def num_requests(self) -> int:
        return len(self.requests)

    def status_counts(self) -> dict[str, int]:
        counts = self.requests["status"].value_counts()
        return {str(status): int(count) for status, count in counts.items()}


def allocator_config(config: dict[str, Any]) -> dict[str, Any]:
    allocator = config.get("allocator") or {}
    return allocator if isinstance(allocator, dict) else {"name": str(allocator)}


def allocator_params(config: dict[str, Any]) -> dict[str, Any]:
    """The allocator parameters, whether to_dict wrote them as a mapping or as (key, value) pairs
    (the frozen config keeps them as a tuple of pairs to stay hashable)."""
    params = allocator_config(config).get("params") or {}
    if isinstance(params, dict):
        return dict(params)
    return {str(key): value for key, value in params}


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise RunDirError(f"{path.parent}: missing {path.name} (a run directory holds "
                          f"{STEPS_FILE}, {REQUESTS_FILE} and {RUN_JSON})")
    try:
        table = read_table(path)
    except ValueError as exc:
        raise RunDirError(f"{exc}; expected a table with columns {', '.join(columns)}") from exc
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise RunDirError(f"{path}: missing columns {', '.join(missing)}")
    return table


def load_run(path: str | Path) -> Run:
    """Load one run directory; raise RunDirError naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: not a directory (expected a run directory)")
    meta_path = path / RUN_JSON
    if not meta_path.is_file():
        raise RunDirError(f"{path}: missing {RUN_JSON}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{meta_path}: not valid JSON ({exc})") from exc
    steps = _read_table(path / STEPS_FILE, STEP_COLUMNS)
    requests = _read_table(path / REQUESTS_FILE, REQUEST_COLUMNS)
    requests["status"] = requests["status"].astype(str)
    # An all-empty reason column reads as float NaN; reasons are text.
    requests["reason"] = requests["reason"].astype(object).where(requests["reason"].notna(), "")
    requests["reason"] = requests["reason"].astype(str)
    return Run(path=path, steps=steps, requests=requests, meta=meta)


def _sort_key(run: Run, facts: AllocatorFacts) -> tuple:
    return (facts.rank(run.allocator), run.allocator, run.block_size or 0, str(run.path))


def group_by_trace(runs: list[Run], facts: AllocatorFacts = NO_FACTS) -> dict[str, list[Run]]:
    """Runs per trace name, traces in first-seen order, allocators in facts.order."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.trace_name, []).append(run)
    return {trace: sorted(group, key=lambda run: _sort_key(run, facts))
            for trace, group in groups.items()}


def run_labels(runs: list[Run], facts: AllocatorFacts = NO_FACTS) -> list[str]:
    """A short, unique label per run: the allocator name, plus the parameters that tell apart
    runs of the same allocator ("paged bs=16", "paged bs=64"), plus the directory as last resort."""
    labels = []
    for run in runs:
        siblings = [other for other in runs if other.allocator == run.allocator]
        keys = sorted({key for other in siblings for key in other.allocator_params})
        oracle_key = facts.oracles.get(run.allocator)
        differing = [key for key in keys if key != oracle_key
                     and len({repr(other.allocator_params.get(key)) for other in siblings}) > 1]
        parts = [f"{facts.label(key)}={run.allocator_params.get(key, 'default')}"
                 for key in differing]
        if facts.is_oracle(run):  # said on every page, whatever the other runs are
            parts.append("oracle")
        labels.append(" ".join([run.allocator, *parts]))
    if len(set(labels)) < len(labels):
        labels = [f"{label} ({run.path.name})" for label, run in zip(labels, runs)]
    return labels


def time_weights(steps: pd.DataFrame) -> np.ndarray:
    """Per-step weights for time-weighted means: the step's duration, or equal weights when the
    durations are all zero (a run that never ran a batch)."""
    weights = steps["step_ms"].to_numpy(dtype=float)
    weights = np.where(np.isfinite(weights) & (weights > 0), weights, 0.0)
    if weights.sum() <= 0:
        return np.ones(len(steps))
    return weights


def time_weighted_mean(steps: pd.DataFrame, column: str) -> float:
    if steps.empty:
        return float("nan")
    return float(np.average(steps[column].to_numpy(dtype=float), weights=time_weights(steps)))
