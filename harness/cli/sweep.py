"""`kvharness sweep GRID.toml --out DIR`: run a grid of configurations, resumably.

Local worker processes by default; `--scheduler ADDRESS` runs the cells on that Dask cluster and
`--scheduler local` starts a LocalCluster. Started again on the same DIR, a sweep skips the cells
already done. Exit status 0 when every cell ran ok, 1 when some failed or were left (--limit).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", type=Path, help="grid TOML with [base], [trace] and [grid] tables")
    parser.add_argument("--out", type=Path, required=True, help="sweep directory (created)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1,
        help="worker processes (local or LocalCluster); default: the number of CPUs",
    )
    parser.add_argument(
        "--scheduler", metavar="ADDRESS",
        help="Dask scheduler address (tcp://host:8786), or 'local' to start a LocalCluster",
    )
    parser.add_argument(
        "--limit", type=int, metavar="N",
        help="run at most N of the cells not done yet, then stop (run again to go on)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from allocators import ParamError
    from harness.sweep.grid import Grid, GridError, expand
    from harness.sweep.runner import SweepError, open_executor, run_sweep

    try:
        grid = Grid.from_toml(args.grid)
        cells = expand(grid)
    except (GridError, ParamError, OSError) as exc:
        print(f"kvharness sweep: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for cell in cells:
            axes = " ".join(f"{key}={value}" for key, value in cell.axes)
            print(f"{cell.index:4d} {cell.config_hash} {axes}")
        print(f"{len(cells)} cells")
        return 0
    started = time.perf_counter()
    try:
        with open_executor(args.scheduler, args.workers) as executor:
            summary = run_sweep(
                grid, cells, args.out, executor, limit=args.limit, progress=not args.no_progress
            )
    except SweepError as exc:
        print(f"kvharness sweep: {exc}", file=sys.stderr)
        return 2
    wall_s = time.perf_counter() - started
    where = "local processes" if args.scheduler is None else f"Dask {args.scheduler}"
    print(
        f"{summary.cells} cells: {summary.ok} ok ({summary.skipped} done before), "
        f"{summary.error} error, {summary.pending} not run; {wall_s:.1f} s wall on {where} "
        f"({args.workers} workers) -> {args.out / 'results.csv'}"
    )
    return 0 if summary.error == 0 and summary.pending == 0 else 1
