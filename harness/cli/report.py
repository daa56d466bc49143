"""`kvharness report RUN_DIR... -o reports/NAME.pdf`: the report PDF of run (and sweep)
directories, with the measured GPU figures of benchmarks/results/ beside the simulated ones."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.argtypes import positive_float

DEFAULT_OUTPUT = Path("reports/kvharness-report.pdf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="RUN_DIR",
                        help="run directories (steps.parquet, requests.parquet, run.json) or sweep "
                             "directories (sweep.json, results.csv)")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"the PDF to write (default {DEFAULT_OUTPUT})")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="measured GPU figures to show beside the simulation "
                             "(default the checkout's benchmarks/results)")
    parser.add_argument("--slo-ttft-s", type=positive_float, default=2.0,
                        help="p99 TTFT SLO in seconds for the goodput view of sweeps (default 2)")


def main(args: argparse.Namespace) -> int:
    from reports.build import build_report
    from reports.sweep_figures import is_sweep_dir

    sweep_dirs = [d for d in args.dirs if is_sweep_dir(d)]
    run_dirs = [d for d in args.dirs if d not in sweep_dirs]
    titles = build_report(run_dirs, args.output,
                          results_dir=args.results_dir,
                          sweep_dirs=sweep_dirs, slo_ttft_s=args.slo_ttft_s,
                          allocators=allocator_facts())
    print(f"wrote {args.output} ({len(titles)} pages)")
    return 0


def allocator_facts():
    """The report's plain-data view of the allocator specs: order, short labels, and which
    parameter fixes a request's up-front reservation."""
    from allocators import SPECS
    from reports.load import AllocatorFacts

    return AllocatorFacts(
        order=tuple(SPECS),
        labels={p.name: p.label for spec in SPECS.values() for p in spec.params if p.label},
        reservations={name: spec.max_len_param for name, spec in SPECS.items()
                      if spec.max_len_param},
        oracles={name: spec.oracle_param for name, spec in SPECS.items() if spec.oracle_param},
    )
