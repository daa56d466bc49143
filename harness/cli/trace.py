"""`kvharness trace info PATH|NAME`: what a trace holds (rows, rate, lengths, prefix reuse).

Imports only argparse and harness.cli.argtypes at module level; pandas and the loaders are
imported when the command runs.
"""
from __future__ import annotations

import argparse
import math

from harness.cli.argtypes import non_negative_int, positive_float, trace_format

_SKIPPED_SHOWN = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = actions.add_parser(
        "info", help="rows, time span, rate, length statistics and prefix reuse of a trace"
    )
    info.add_argument("source", metavar="PATH|NAME", help="a trace file or a bundled trace name")
    add_trace_load_arguments(info)
    info.add_argument(
        "--rate-per-s", type=positive_float, default=1.0,
        help="ShareGPT only: rate of the synthetic Poisson arrivals (default 1.0)",
    )
    info.add_argument("--seed", type=non_negative_int, default=0,
                      help="ShareGPT only: seed of the arrivals")


def add_trace_load_arguments(parser: argparse.ArgumentParser) -> None:
    """How to read a trace file: the flags of every subcommand that loads one."""
    parser.add_argument(
        "--format", type=trace_format, default=None,
        help="azure, mooncake, burstgpt or sharegpt (default: detected from the content)",
    )
    parser.add_argument(
        "--skip-invalid", action="store_true",
        help="drop invalid rows of the trace (listed by `kvharness trace info`) instead of "
             "stopping at the first one",
    )


def trace_load_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of workloads.load_trace that add_trace_load_arguments set."""
    return {"format": args.format, "skip_invalid": args.skip_invalid}


def main(args: argparse.Namespace) -> int:
    from workloads import describe, load_trace

    trace = load_trace(args.source, **trace_load_options(args), rate_per_s=args.rate_per_s,
                       seed=args.seed)
    print(format_info(trace.attrs, describe(trace)))
    return 0


def format_info(attrs: dict, stats) -> str:
    """The report `trace info` prints, from a trace's attrs and its workloads.stats.TraceStats."""
    rate = "n/a" if math.isnan(stats.rate_per_s) else f"{stats.rate_per_s:,.2f} req/s"
    lines = [
        f"trace    {attrs['name']} ({attrs['format']}, {attrs['source']})",
        f"rows     {stats.rows:,}",
        f"span     {stats.span_s:,.1f} s",
        f"rate     {rate}",
        f"prompt   {_lengths(stats.prompt)}",
        f"output   {_lengths(stats.output)}",
        f"failed   {stats.failed:,}",
    ]
    if stats.prefix is not None:
        prefix = stats.prefix
        lines.append(
            f"prefix   {prefix.references:,} block references to {prefix.distinct:,} distinct "
            f"blocks: {prefix.reusable:.1%} reusable ({prefix.chunk_tokens}-token blocks)"
        )
    else:
        lines.append("prefix   no prefix hashes")
    skipped = attrs.get("skipped_rows", [])
    lines.append(f"skipped  {len(skipped):,} invalid rows")
    for line, reason in skipped[:_SKIPPED_SHOWN]:
        lines.append(f"         line {line}: {reason}")
    if len(skipped) > _SKIPPED_SHOWN:
        lines.append(f"         ... and {len(skipped) - _SKIPPED_SHOWN:,} more")
    return "\n".join(lines)


def _lengths(stats) -> str:
    return (
        f"mean {stats.mean:,.0f}  median {stats.median:,.0f}  p99 {stats.p99:,.0f}  "
        f"max {stats.max:,}  min {stats.min:,}"
    )
