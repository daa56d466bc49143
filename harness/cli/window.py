"""`kvharness window`: what a sliding attention window frees, allocator by allocator.

A slice of a long-context trace (Mooncake's conversations by default, cut to the model's
context) is replayed on a model with a sliding window (mistral-7b: 4,096 tokens) through every
allocator of allocators.SPECS at its default grain, once with the model's window and once with
full attention, on one GPU with the whole KV budget. The window lets paged, segmented and hybrid
give back the blocks behind it (and price only the keys attention reads); static cannot give
back any of its reservation. Run directories go to OUT_DIR/<trace>/{window-N,full}/<allocator>;
the PDF holds the takeaway computed from them, the figures and the waste breakdown. Apart from
`kvharness run` because it is a question about one model feature, not the allocator study.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from allocators import SPECS
from harness.cli.argtypes import allocator_names, non_negative_int, positive_float, positive_int
from harness.cli.trace import add_trace_load_arguments, trace_load_options

DEFAULT_TRACE = "mooncake-conv"
DEFAULT_MODEL = "mistral-7b"
DEFAULT_REQUESTS = 400
DEFAULT_RATE = 1.0  # Mooncake's recorded rate: full attention presses memory there, on an H100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", default=DEFAULT_TRACE,
                        help=f"bundled trace name or path (default {DEFAULT_TRACE})")
    add_trace_load_arguments(parser)
    parser.add_argument("--requests", type=positive_int, metavar="N", default=DEFAULT_REQUESTS,
                        help=f"the first N requests (default {DEFAULT_REQUESTS})")
    parser.add_argument("--rate", type=positive_float, default=DEFAULT_RATE,
                        help=f"factor of the trace's recorded rate (default {DEFAULT_RATE:g})")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"model preset with a sliding window (default {DEFAULT_MODEL})")
    parser.add_argument("--sliding-window", type=positive_int, metavar="TOKENS",
                        help="this window instead of the model's own")
    parser.add_argument("--gpu", default="h100-80gb", help="GPU preset (default h100-80gb)")
    parser.add_argument("--allocators", type=allocator_names, default=tuple(SPECS),
                        help=f"comma-separated (default {','.join(SPECS)})")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path("runs/window"),
                        help="where run directories go (default runs/window)")
    parser.add_argument("-o", "--output", type=Path, default=Path("reports/window-report.pdf"),
                        help="the PDF (default reports/window-report.pdf)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def window_configs(args: argparse.Namespace) -> dict[str, list]:
    """The runs: per attention ("window-N" and "full"), one RunConfig per allocator."""
    from harness.model.config import AllocatorConfig, ConfigError, RunConfig
    from harness.model.presets import gpu_preset, model_preset

    model = model_preset(args.model)
    window = args.sliding_window or model.sliding_window
    if window is None:
        raise ConfigError(f"model {args.model} attends fully; give --sliding-window or a model "
                          "with a window (mistral-7b)")
    configs = {}
    for name, attention in ((f"window-{window}", window), ("full", None)):
        configs[name] = [
            RunConfig(model=dataclasses.replace(model, sliding_window=attention),
                      gpu=gpu_preset(args.gpu), seed=args.seed,
                      allocator=AllocatorConfig.of(spec.name, **{spec.grain: _grain(spec)}))
            for spec in (SPECS[allocator] for allocator in args.allocators)]
    return configs


def _grain(spec) -> int:
    return spec.param(spec.grain).default


def main(args: argparse.Namespace) -> int:
    import workloads
    from harness.cli.report import allocator_facts
    from harness.engine.loop import simulate
    from harness.engine.recorder import write_run
    from reports.load import load_run
    from reports.window import pair_runs, takeaway, write_window_report

    started = time.perf_counter()
    configs = window_configs(args)
    context = next(iter(configs.values()))[0].max_model_len
    spec = workloads.TraceSpec(args.trace, max_requests=args.requests, rate_scale=args.rate,
                               cap_lengths_to=context, **trace_load_options(args))
    trace = spec.load()
    trace_dir = args.out_dir / Path(args.trace).name.split(".")[0]
    dirs = []
    for attention, runs in configs.items():
        for config in runs:
            out = trace_dir / attention / config.allocator.name
            print(f"{attention} {config.allocator.name} ...", file=sys.stderr)
            write_run(simulate(config, trace, progress=not args.no_progress), out)
            dirs.append(out)
    pairs = pair_runs([load_run(d) for d in dirs], allocator_facts())
    name = trace.attrs.get("name") or args.trace
    titles = write_window_report(pairs, name, args.output)
    print(takeaway(pairs, name))
    print(f"{len(dirs)} runs in {trace_dir}; wrote {args.output} ({len(titles)} pages) in "
          f"{time.perf_counter() - started:.0f} s")
    return 0
