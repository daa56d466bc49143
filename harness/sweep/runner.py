"""Run the cells of a grid and keep one results table: resumable, atomic, executor-independent.

A sweep directory holds:

    sweep.json         the grid (base, trace, axes) and its cells: index, config_hash, axes
    results.csv        one row per cell that has run, in grid order (the schema below)
    cells/<hash>/      each finished cell's run directory: steps.parquet, requests.parquet, run.json

results.csv columns, in order: `cell` (index in grid order), `config_hash`, `status` ("ok" or
"error"), `error` (exception type and message, empty when ok); the config columns `trace`,
`rate_scale`, `model`, `allocator`, then every allocator parameter and every other grid key
(empty where a cell's allocator does not take it); then the run summary keys in SUMMARY_KEYS order
(empty for an error row). Floats are written with repr (shortest round trip), missing values empty.

A cell is done when cells/<hash>/run.json exists; a rerun skips it and rebuilds its row from that
file, so fresh and resumed rows are the same bytes. Errored cells run again on the next start.
Workers return a cell's files as bytes and only this process writes them: each file goes to a
temporary name in its own directory and is renamed into place, and a cell directory is assembled
as cells/.tmp-<hash>-<pid>/ and renamed, so a sweep killed at any point leaves no half-written
file and, started again, ends with the same results.csv as an uninterrupted run. The hash keys a
cell's config, not the engine's code: after changing the engine, sweep into a new directory.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import tempfile
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

from harness.sweep.grid import Cell, Grid
from harness.sweep.lifeline import child_context, die_with_parent
from reports.schema import CELLS_DIR, KEY_COLUMNS, RESULTS_CSV, RUN_JSON, SUMMARY_KEYS, SWEEP_JSON

CellFn = Callable[[Cell], dict[str, bytes]]


class SweepError(RuntimeError):
    """A sweep that cannot start: a missing optional dependency or an unusable directory."""


@dataclass(frozen=True)
class CellOutcome:
    """What a worker sends back: the run directory's files, or the error that stopped the cell."""

    files: dict[str, bytes] = field(default_factory=dict)
    error: str = ""
    traceback: str = ""


@dataclass(frozen=True)
class SweepSummary:
    """How a sweep call ended: cells in the grid, done before it started, ok and error now."""

    cells: int
    skipped: int
    ok: int
    error: int

    @property
    def pending(self) -> int:
        return self.cells - self.ok - self.error


class Executor(Protocol):
    def map_unordered(self, fn: CellFn, cells: list[Cell]) -> Iterator[tuple[Cell, CellOutcome]]:
        """Run fn on every cell; yield each cell with its outcome as soon as it finishes."""


@dataclass(frozen=True)
class LocalExecutor:
    """Local worker processes (concurrent.futures) that die with this process, even by SIGKILL."""

    workers: int

    def map_unordered(self, fn: CellFn, cells: list[Cell]) -> Iterator[tuple[Cell, CellOutcome]]:
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=child_context(),
                                   initializer=die_with_parent, initargs=(os.getpid(),))
        try:
            futures = {pool.submit(guarded, fn, cell): cell for cell in cells}
            for future in as_completed(futures):
                yield futures[future], _outcome(future)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class DaskExecutor:
    """A Dask distributed cluster, through the client's own futures."""

    client: Any  # distributed.Client

    def map_unordered(self, fn: CellFn, cells: list[Cell]) -> Iterator[tuple[Cell, CellOutcome]]:
        from distributed import as_completed as dask_completed

        futures = {self.client.submit(guarded, fn, cell, pure=False): cell for cell in cells}
        try:
            for future in dask_completed(futures):
                yield futures[future], _outcome(future)
        finally:
            self.client.cancel(list(futures))


def guarded(fn: CellFn, cell: Cell) -> CellOutcome:
    """Run one cell in a worker; an exception becomes an error outcome, not a lost worker."""
    try:
        return CellOutcome(files=fn(cell))
    except Exception as exc:  # any failure of one cell is recorded; the sweep goes on
        return CellOutcome(error=_message(exc), traceback=traceback.format_exc())


def simulate_cell(cell: Cell) -> dict[str, bytes]:
    """The cell function of a real sweep: replay the cell's trace in the engine."""
    from harness import simulate, write_run

    result = simulate(cell.config, cell.trace.load())
    with tempfile.TemporaryDirectory(prefix="kvharness-cell-") as tmp:
        write_run(result, tmp)
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}


@contextlib.contextmanager
def open_executor(scheduler: str | None, workers: int) -> Iterator[Executor]:
    """Local processes when scheduler is None, a new LocalCluster for "local", else a client of
    the Dask scheduler at that address."""
    if scheduler is None:
        yield LocalExecutor(workers)
        return
    try:
        from distributed import Client, LocalCluster
    except ModuleNotFoundError:
        raise SweepError(
            "--scheduler needs dask.distributed: pip install 'kvharness[sweep]'"
        ) from None
    with contextlib.ExitStack() as stack:
        if scheduler == "local":
            cluster = stack.enter_context(
                LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0")
            )
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(Client(scheduler))
        yield DaskExecutor(client)


def run_sweep(
    grid: Grid,
    cells: list[Cell],
    out_dir: str | Path,
    executor: Executor,
    *,
    cell_fn: CellFn = simulate_cell,
    limit: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> SweepSummary:
    """Run every cell not done yet (at most `limit` of them) and write results.csv after each."""
    from tqdm import tqdm

    out = Path(out_dir)
    cells_dir = out / CELLS_DIR
    cells_dir.mkdir(parents=True, exist_ok=True)
    _remove_partials(out)
    atomic_write(out / SWEEP_JSON, _sweep_json(grid, cells))
    rows = done_rows(cells, cells_dir)
    pending = [cell for cell in cells if cell.index not in rows]
    skipped = len(rows)
    todo = pending if limit is None else pending[:limit]
    write_results(out / RESULTS_CSV, cells, rows)
    errors = 0
    with tqdm(total=len(cells), initial=skipped, disable=not progress, unit="cell") as bar:
        say = log or bar.write
        for cell, outcome in executor.map_unordered(cell_fn, todo):
            if not outcome.error and RUN_JSON not in outcome.files:
                outcome = CellOutcome(error="SweepError: the cell function wrote no run.json")
            if outcome.error:
                errors += 1
                rows[cell.index] = error_row(cell, outcome.error)
                say(f"cell {cell.index} ({cell.config_hash}) failed: {outcome.error}")
                if outcome.traceback:
                    say(outcome.traceback.rstrip())
            else:
                install_cell(cells_dir, cell.config_hash, outcome.files)
                rows[cell.index] = ok_row(cell, cells_dir / cell.config_hash / RUN_JSON)
            write_results(out / RESULTS_CSV, cells, rows)
            bar.update()
    return SweepSummary(len(cells), skipped, len(rows) - errors, errors)


def done_rows(cells: list[Cell], cells_dir: Path) -> dict[int, dict[str, Any]]:
    """The rows of the cells finished before: those whose run directory holds run.json."""
    rows = {}
    for cell in cells:
        run_json = cells_dir / cell.config_hash / RUN_JSON
        if run_json.exists():
            rows[cell.index] = ok_row(cell, run_json)
    return rows


def ok_row(cell: Cell, run_json: Path) -> dict[str, Any]:
    summary = json.loads(run_json.read_text())["summary"]
    return {"status": "ok", "error": "", **cell.columns(), **summary}


def error_row(cell: Cell, message: str) -> dict[str, Any]:
    return {"status": "error", "error": message, **cell.columns()}


def write_results(path: Path, cells: list[Cell], rows: dict[int, dict[str, Any]]) -> None:
    """Write the results table: header from the grid alone, rows in grid order."""
    config_columns: dict[str, None] = {}
    for cell in cells:
        config_columns.update(dict.fromkeys(cell.columns()))
    summary_keys = set().union(*(row.keys() for row in rows.values())) - set(config_columns)
    extra = sorted(summary_keys - set(SUMMARY_KEYS) - set(KEY_COLUMNS))
    header = [*KEY_COLUMNS, *config_columns, *SUMMARY_KEYS, *extra]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for cell in cells:
        if cell.index in rows:
            row = {**rows[cell.index], "cell": cell.index, "config_hash": cell.config_hash}
            writer.writerow([_format(row.get(name)) for name in header])
    atomic_write(path, buffer.getvalue().encode())


def install_cell(cells_dir: Path, config_hash: str, files: dict[str, bytes]) -> None:
    """Write a cell's run directory under a temporary name, then rename it into place."""
    final = cells_dir / config_hash
    tmp = cells_dir / f".tmp-{config_hash}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, data in files.items():
        (tmp / Path(name).name).write_bytes(data)
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / RUN_JSON).exists():
            raise
        shutil.rmtree(tmp)  # another sweep of this directory finished the same cell first


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file whole or not at all: a temporary file in the same directory, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _remove_partials(out: Path) -> None:
    """Drop what a killed sweep left half-written: temporary cell directories and files."""
    for tmp in (out / CELLS_DIR).glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for tmp in out.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def _sweep_json(grid: Grid, cells: Iterable[Cell]) -> bytes:
    doc = {
        "grid": grid.to_dict(),
        "cells": [
            {"cell": c.index, "config_hash": c.config_hash, "axes": dict(c.axes)} for c in cells
        ],
    }
    return (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode()


def _outcome(future) -> CellOutcome:
    """A future's outcome; a worker that died or could not unpickle becomes an error row."""
    try:
        return future.result()
    except Exception as exc:  # BrokenProcessPool, KilledWorker, CancelledError, ...
        return CellOutcome(error=_message(exc), traceback=traceback.format_exc())


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())  # one line: the table keeps one row per cell
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)
