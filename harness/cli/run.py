"""`kvharness run`: the main job (plain `kvharness` prints the help).

Replays the bundled Azure and Mooncake conversation traces through every allocator of
allocators.SPECS for llama3-8b on one H100 80GB (the full KV budget, the recorded arrival times),
adds a block-size ablation of the default allocator on Mooncake, and writes the report PDF. Run directories go to
runs/<trace>/<run>/ (--out-dir to change).

By default the whole traces are replayed (19,366 and 12,031 requests): 147 s wall (280 s of
CPU over the two worker processes) on this project's 2-core machine; `--requests N` replays only
the first N requests of each trace (2,000: about 26 s); leaving it out replays the whole traces.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from allocators import DEFAULT_ALLOCATOR, SPECS, AllocatorSpec
from harness.cli.argtypes import (allocator_names, non_negative_int, positive_int, positive_ints,
                                  unique_names)
from harness.cli.trace import add_trace_load_arguments, trace_load_options

DEFAULT_TRACES = ("azure-conv", "mooncake-conv")
DEFAULT_ALLOCATORS = tuple(SPECS)
ABLATION_ALLOCATOR = DEFAULT_ALLOCATOR
ABLATION_BLOCK_SIZES = (8, 32, 64, 128)  # beside the default grain of the main runs
ABLATION_TRACE = "mooncake-conv"  # memory-bound at its recorded rate: block size can matter


@dataclass(frozen=True)
class Job:
    trace_name: str
    allocator: str
    params: tuple[tuple[str, Any], ...]
    out_dir: Path
    ablation: bool  # a block-size ablation run, kept out of the per-trace sections


def _request_count(text: str) -> int:
    """--requests N, N >= 1. `--requests 0` once meant the whole traces; that is the default now,
    and the error says so rather than replaying nothing."""
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(
            f"{exc}; leave --requests out to replay the whole traces"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--traces", type=unique_names, default=DEFAULT_TRACES,
                        help="comma-separated bundled trace names or paths "
                             f"(default {','.join(DEFAULT_TRACES)})")
    add_trace_load_arguments(parser)
    parser.add_argument("--allocators", type=allocator_names, default=DEFAULT_ALLOCATORS,
                        help=f"comma-separated (default {','.join(DEFAULT_ALLOCATORS)})")
    parser.add_argument("--requests", type=_request_count, metavar="N",
                        help="replay the first N requests of each trace (default: the whole "
                             "traces)")
    parser.add_argument("--block-sizes", type=positive_ints, default=ABLATION_BLOCK_SIZES,
                        help=f"block sizes of the {ABLATION_ALLOCATOR} ablation, "
                             f"comma-separated; empty to skip (default "
                             f"{','.join(map(str, ABLATION_BLOCK_SIZES))})")
    parser.add_argument("--ablation-trace", default=ABLATION_TRACE,
                        help=f"the trace of the block-size ablation (default {ABLATION_TRACE})")
    parser.add_argument("--model", default="llama3-8b", help="model preset (default llama3-8b)")
    parser.add_argument("--gpu", default="h100-80gb", help="GPU preset (default h100-80gb)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path("runs"),
                        help="where run directories go (default runs/)")
    parser.add_argument("-o", "--output", type=Path, default=Path("reports/kvharness-report.pdf"),
                        help="the report PDF (default reports/kvharness-report.pdf)")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="measured GPU figures for the report (default the checkout's "
                             "benchmarks/results)")
    parser.add_argument("--jobs", type=positive_int, default=2,
                        help="worker processes for the runs (default 2; 1 runs in-process)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _default_grain(spec: AllocatorSpec) -> int:
    return spec.param(spec.grain).default


def plan_jobs(args: argparse.Namespace) -> list[Job]:
    """The main runs (every allocator at its default grain, written into run.json so that the
    ablation page places them among the ablation runs) and the ablation runs."""
    jobs = []
    for trace_name in args.traces:
        trace_dir = args.out_dir / Path(trace_name).name.split(".")[0]
        for allocator in args.allocators:
            spec = SPECS[allocator]
            params = ((spec.grain, _default_grain(spec)),)
            jobs.append(Job(trace_name, allocator, params, trace_dir / allocator, False))
        if trace_name == args.ablation_trace and ABLATION_ALLOCATOR in args.allocators:
            jobs += _ablation_jobs(trace_name, trace_dir, args.block_sizes)
    return jobs


def _ablation_jobs(trace_name: str, trace_dir: Path, sizes: tuple[int, ...]) -> list[Job]:
    spec = SPECS[ABLATION_ALLOCATOR]
    short = spec.param(spec.grain).label or spec.grain
    return [Job(trace_name, spec.name, ((spec.grain, size),),
                trace_dir / f"{spec.name}-{short}{size}", True)
            for size in sizes if size != _default_grain(spec)]


def run_job(job: Job, trace, base) -> tuple[Job, float]:
    """Simulate one job and write its run directory; return it with its wall time."""
    from harness import AllocatorConfig, simulate, write_run

    started = time.perf_counter()
    config = replace(base, allocator=AllocatorConfig.of(job.allocator, **dict(job.params)))
    write_run(simulate(config, trace), job.out_dir)
    return job, time.perf_counter() - started


def _load_traces(args: argparse.Namespace) -> dict[str, Any]:
    """Each of --traces, cut to its first --requests requests when that is given."""
    import workloads

    traces = {}
    for name in args.traces:
        trace = workloads.load_trace(name, **trace_load_options(args))
        traces[name] = trace if args.requests is None else workloads.take(trace, args.requests)
    return traces


def _run_all(jobs: list[Job], traces: dict, base, workers: int, progress: bool) -> list[float]:
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    # Longest runs first, so that the workers stay busy to the end.
    order = sorted(jobs, key=lambda job: -SPECS[job.allocator].cost_hint
                   * float(traces[job.trace_name]["prompt_tokens"].sum()))
    walls = {}
    bar = tqdm(total=len(jobs), unit="run", desc="simulating", file=sys.stderr,
               disable=not progress)
    if workers <= 1:
        for job in order:
            bar.set_postfix_str(f"{job.trace_name}/{job.out_dir.name}")
            done, wall_s = run_job(job, traces[job.trace_name], base)
            walls[done] = wall_s
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(run_job, job, traces[job.trace_name], base) for job in order]
            for future in as_completed(futures):
                done, wall_s = future.result()
                walls[done] = wall_s
                bar.set_postfix_str(f"done {done.trace_name}/{done.out_dir.name}")
                bar.update()
    bar.close()
    return [walls[job] for job in jobs]


def main(args: argparse.Namespace) -> int:
    from harness import RunConfig
    from harness.cli.report import allocator_facts
    from harness.model.presets import gpu_preset, model_preset
    from reports.build import build_report

    started = time.perf_counter()
    base = RunConfig(model=model_preset(args.model), gpu=gpu_preset(args.gpu), seed=args.seed)
    traces = _load_traces(args)
    jobs = plan_jobs(args)
    walls = _run_all(jobs, traces, base, args.jobs, not args.no_progress)
    for job, wall_s in zip(jobs, walls):
        print(f"  {job.trace_name:<16} {job.out_dir.name:<12} {wall_s:6.1f} s  -> {job.out_dir}")
    titles = build_report([job.out_dir for job in jobs if not job.ablation], args.output,
                          ablation_dirs=[job.out_dir for job in jobs if job.ablation],
                          results_dir=args.results_dir,
                          allocators=allocator_facts())
    print(f"wrote {args.output} ({len(titles)} pages) in {time.perf_counter() - started:.0f} s")
    return 0
