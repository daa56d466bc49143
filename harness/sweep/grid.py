"""Sweep grids: read a grid TOML, expand it into cells, give each cell a stable hash.

A grid file has three tables:

    [base]   RunConfig fields, laid out as in a run TOML (model, gpu, [base.allocator], ...)
    [trace]  the trace every cell replays: source (bundled name or path), a slice of it
             (start_s, duration_s, max_requests) and rate_scale (arrival rate multiplier)
    [grid]   lists of values; every cell is one point of their product applied to the base

A [grid] key is `trace` (the trace source), a [trace] field (`rate_scale`, `start_s`,
`duration_s`, `max_requests`), `allocator` (its name), a parameter of some allocator (as its spec
in allocators/ names it), or a RunConfig field, dotted for nested ones (`model`,
`gpu_memory_utilization`, `scheduler.max_num_seqs`). Allocator parameters that a cell's allocator
does not take are dropped from that cell, not multiplied, so a grid holds no duplicate cells; a
value the allocator's spec rejects is an allocators.ParamError naming the cell.

A cell's hash is the SHA-256 of the canonical JSON of its resolved RunConfig and trace spec, so
the same run gets the same hash in every process, on every machine and from any grid file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from allocators import DEFAULT_ALLOCATOR, SPECS, ParamError, spec_of
from harness.model.config import ConfigError, RunConfig
from workloads.spec import TraceSpec, TraceSpecError

HASH_CHARS = 16  # 64 bits of SHA-256: names a cell directory, collisions out of reach


class GridError(ValueError):
    """A grid file that cannot be expanded: names the file, table, key and value."""


_TRACE_FIELDS = frozenset(f.name for f in dataclasses.fields(TraceSpec))


@dataclass(frozen=True)
class Cell:
    """One point of a grid: a full run config, its trace, and where it stands in grid order."""

    index: int
    axes: tuple[tuple[str, Any], ...]  # the grid values this cell uses, in grid order
    config: RunConfig
    trace: TraceSpec
    config_hash: str

    def columns(self) -> dict[str, Any]:
        """The config columns of this cell's row in a results table."""
        out: dict[str, Any] = {
            "trace": self.trace.source,
            "rate_scale": self.trace.rate_scale,
            "model": self.config.model.name,
            "allocator": self.config.allocator.name,
        }
        out.update(self.config.allocator.params)
        for key, value in self.axes:
            out.setdefault(key, value)
        return out


@dataclass(frozen=True)
class Grid:
    """A parsed grid file: base config, trace spec and the ordered axes."""

    base: dict[str, Any]
    trace: dict[str, Any]
    axes: tuple[tuple[str, tuple[Any, ...]], ...]
    source: str = "<grid>"

    @classmethod
    def from_toml(cls, path: str | Path) -> Grid:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise GridError(f"{path}: {exc}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<grid>") -> Grid:
        unknown = sorted(set(data) - {"base", "trace", "grid"})
        if unknown:
            raise GridError(f"{source}: unknown table(s) {unknown}; a grid has [base], [trace], [grid]")
        axes = []
        for key, values in data.get("grid", {}).items():
            if not isinstance(values, list) or not values:
                raise GridError(f"{source}: [grid] {key} must be a non-empty list, got {values!r}")
            axes.append((key, tuple(values)))
        return cls(dict(data.get("base", {})), dict(data.get("trace", {})), tuple(axes), source)

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "trace": self.trace, "grid": {k: list(v) for k, v in self.axes}}


def expand(grid: Grid) -> list[Cell]:
    """Every distinct cell of the grid, in grid order (the last [grid] key varies fastest)."""
    keys = [key for key, _ in grid.axes]
    cells: list[Cell] = []
    seen: set[str] = set()
    for values in itertools.product(*(values for _, values in grid.axes)):
        point = dict(zip(keys, values))
        try:
            config, trace, used = _resolve(grid, point)
        except ParamError as exc:  # kept as its own type: every bad allocator parameter is one
            raise ParamError(f"{grid.source}: cell {point}: {exc}") from None
        except (ConfigError, GridError, TypeError) as exc:
            raise GridError(f"{grid.source}: cell {point}: {exc}") from None
        digest = config_hash(config, trace)
        if digest in seen:
            continue
        seen.add(digest)
        axes = tuple((key, point[key]) for key in keys if key in used)
        cells.append(Cell(len(cells), axes, config, trace, digest))
    return cells


def config_hash(config: RunConfig, trace: TraceSpec) -> str:
    """A stable hash of a cell: canonical JSON (sorted keys, no spaces) through SHA-256."""
    spec = {"config": config.to_dict(), "trace": trace.to_dict()}
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def _all_allocator_params() -> frozenset[str]:
    return frozenset(key for spec in SPECS.values() for key in spec.names)


def _resolve(grid: Grid, point: dict[str, Any]) -> tuple[RunConfig, TraceSpec, set[str]]:
    """Apply one grid point to the base; return the config, the trace and the keys it used."""
    config = json.loads(json.dumps(grid.base))  # a deep copy of plain TOML values
    trace = dict(grid.trace)
    allocator = config.get("allocator", {})
    # Flat keys of [allocator] override its params sub-table (RunConfig.from_dict's rule).
    allocator = config["allocator"] = {"name": allocator} if isinstance(allocator, str) else allocator
    known_params = _all_allocator_params()
    for key, value in point.items():
        if key == "trace":
            trace["source"] = value
        elif key in _TRACE_FIELDS:
            trace[key] = value
        elif key == "allocator":
            allocator["name"] = value
        elif key in known_params:
            allocator[key] = value
        else:
            _set_path(config, key, value)
    unknown = sorted(set(trace) - _TRACE_FIELDS)
    if unknown:
        raise GridError(f"[trace]: unknown field(s) {unknown}; known: {sorted(_TRACE_FIELDS)}")
    for key in ("start_s", "duration_s", "rate_scale"):  # 2 and 2.0 are one cell, one hash
        if isinstance(trace.get(key), int):
            trace[key] = float(trace[key])
    takes = _drop_untaken(allocator, known_params)
    used = {key for key in point if key not in known_params or key in takes}
    try:
        spec = TraceSpec(**trace)
    except TraceSpecError as exc:
        raise GridError(f"{grid.source}: {exc}") from None
    return RunConfig.from_dict(config), spec, used


def _drop_untaken(allocator: dict[str, Any], known_params: frozenset[str]) -> tuple[str, ...]:
    """Remove from a cell's [allocator] table (flat keys and params sub-table) the parameters
    of other allocators; return the names its own allocator takes."""
    takes = spec_of(allocator.get("name", DEFAULT_ALLOCATOR)).names
    params = allocator.get("params", {})
    keys = [(allocator, key) for key in allocator if key not in ("name", "params")]
    for table, key in keys + [(params, key) for key in params]:
        if key not in known_params:
            raise GridError(f"[base.allocator]: {key!r} is no allocator's parameter")
        if key not in takes:
            del table[key]
    return takes


def _set_path(config: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    table = config
    for part in parents:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise GridError(f"[grid] {key}: {part} is a value in [base], not a table")
    table[leaf] = value
