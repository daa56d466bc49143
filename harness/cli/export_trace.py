"""`kvharness export-trace RUN_DIR [-o FILE]`: the run's steps and requests as a Chrome /
Perfetto timeline (trace-event JSON), one process per replica; open it in ui.perfetto.dev."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="the JSON file to write (default RUN_DIR/trace.json)")


def main(args: argparse.Namespace) -> int:
    from reports.trace_events import export_trace

    out = args.output or args.run_dir / "trace.json"
    count = export_trace(args.run_dir, out)
    print(f"wrote {out} ({count} events)")
    return 0
