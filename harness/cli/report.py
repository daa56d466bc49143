"""`kvharness report RUN_DIR... -o reports/NAME.pdf`: the report PDF of run (and sweep)
directories, with the measured GPU figures of benchmarks/results/ beside the simulated ones."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.argtypes import positive_float

DEFAULT_OUTPUT = Path("reports/kvharness-report.pdf")
SWEEP_SLO_TTFT_S = 2.0
# The SLO of each bundled trace's capacity curve: (TTFT p99 s, mean E2E per output token s).
# Azure conversations are interactive chat (a first token within 2 s); Mooncake prompts run
# to 126k tokens, whose prefill alone takes seconds, so 30 s. Other traces: reports' default.
TRACE_SLOS = {"azure-conv": (2.0, 0.2), "mooncake-conv": (30.0, 0.2)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="RUN_DIR",
                        help="run directories (steps.parquet, requests.parquet, run.json) or sweep "
                             "directories (sweep.json, results.csv)")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"the PDF to write (default {DEFAULT_OUTPUT})")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="measured GPU figures to show beside the simulation "
                             "(default the checkout's benchmarks/results)")
    add_slo_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from reports.build import build_report
    from reports.sweep_figures import is_sweep_dir

    sweep_dirs = [d for d in args.dirs if is_sweep_dir(d)]
    run_dirs = [d for d in args.dirs if d not in sweep_dirs]
    titles = build_report(run_dirs, args.output,
                          results_dir=args.results_dir,
                          sweep_dirs=sweep_dirs,
                          slo_ttft_s=args.slo_ttft_s or SWEEP_SLO_TTFT_S,
                          allocators=allocator_facts(), slos=trace_slos(args))
    print(f"wrote {args.output} ({len(titles)} pages)")
    return 0


def add_slo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slo-ttft-s", type=positive_float, default=None,
                        help="TTFT p99 of the SLO in seconds, for every trace (default: per "
                             "trace, 2 for Azure, 30 for Mooncake; sweeps' goodput: 2)")
    parser.add_argument("--slo-norm-latency-s", type=positive_float, default=None,
                        help="mean E2E per output token of the SLO, for every trace "
                             "(default 0.2)")


def trace_slos(args: argparse.Namespace) -> dict:
    """The SLO of each bundled trace, with what the flags set for every trace."""
    from reports.regime import DEFAULT_SLO, Slo
    from reports.study import OTHER_TRACES

    out = {}
    for name in (*TRACE_SLOS, OTHER_TRACES):
        ttft, norm = TRACE_SLOS.get(name, (DEFAULT_SLO.ttft_p99_s,
                                           DEFAULT_SLO.normalized_latency_s))
        out[name] = Slo(args.slo_ttft_s or ttft, args.slo_norm_latency_s or norm)
    return out


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
        grains={name: (spec.grain, spec.param(spec.grain).default)
                for name, spec in SPECS.items()},
    )
