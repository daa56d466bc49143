"""`kvharness run`: the main job, a study (plain `kvharness` prints the help).

For each bundled trace, a slice of its first requests is replayed at several request rates
(workloads.scale_rate) through every allocator of allocators.SPECS, the static baseline also as
its oracle, on a model whose context the trace fits: Azure conversations on llama3-8b (8k),
Mooncake's long prompts on llama3.1-8b (128k); one H100 80GB, the whole KV budget, a bf16 KV
cache (--kv-dtype). A paged block-size ablation runs on Mooncake at the block sizes the kernel
was measured at, and paged runs its capacity curve there again with the other KV dtype (fp8):
a few runs of a second each. The report shows capacity curves, the rate each allocator
sustains under the SLO, the sections at the first rate where memory presses, the ablation, the
KV dtype comparison and the measured GPU pages; a short summary is printed at the end. Run
directories go to runs/<trace>/<rate>/<run>/ (--out-dir to change).
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
from harness.cli.report import add_slo_arguments
from harness.cli.simulate import add_kv_dtype_argument
from harness.cli.trace import add_trace_load_arguments, trace_load_options
from harness.model.config import KV_DTYPES
from reports.schema import DEFAULT_KV_DTYPE

DEFAULT_TRACES = ("azure-conv", "mooncake-conv")
DEFAULT_ALLOCATORS = tuple(SPECS)
# Per trace: the model it runs on, and the rate factors of its capacity curve (times its
# recorded rate; a x2 grid, from idle to overloaded for every allocator).
TRACE_MODELS = {"azure-conv": "llama3-8b", "mooncake-conv": "llama3.1-8b"}
TRACE_RATES = {"azure-conv": (1.0, 2.0, 4.0, 8.0, 16.0),
               "mooncake-conv": (0.0625, 0.125, 0.25, 0.5, 1.0)}
OTHER_RATES = (0.25, 0.5, 1.0, 2.0, 4.0)  # a trace given by path
DEFAULT_MODEL = "llama3-8b"
DEFAULT_REQUESTS = 400  # the slice: enough for a p99, few enough for the 3-minute budget
ABLATION_ALLOCATOR = DEFAULT_ALLOCATOR
# With the default 16: the block sizes the kernel was measured at, but 1 (the paged allocator
# hashes every block for its prefix cache, so one-token blocks simulate far slower; segmented
# is the page-1 design).
ABLATION_BLOCK_SIZES = (64, 256)
ABLATION_TRACE = "mooncake-conv"
ABLATION_RATE = 0.25  # a rate factor of the ablation trace's curve where memory presses
KV_DTYPE_ALLOCATOR = DEFAULT_ALLOCATOR  # runs the ablation trace's curve with each KV dtype


@dataclass(frozen=True)
class Job:
    trace_name: str
    model: str
    rate: float  # factor of the trace's recorded rate
    allocator: str
    params: tuple[tuple[str, Any], ...]
    out_dir: Path
    ablation: bool  # a block-size ablation run, kept out of the per-trace sections
    kv_dtype: str  # another than the study's (--kv-dtype): a KV dtype comparison run


def _request_count(text: str) -> int:
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; the slice needs at least one request") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--traces", type=unique_names, default=DEFAULT_TRACES,
                        help="comma-separated bundled trace names or paths "
                             f"(default {','.join(DEFAULT_TRACES)})")
    add_trace_load_arguments(parser)
    parser.add_argument("--allocators", type=allocator_names, default=DEFAULT_ALLOCATORS,
                        help=f"comma-separated (default {','.join(DEFAULT_ALLOCATORS)})")
    parser.add_argument("--requests", type=_request_count, metavar="N", default=DEFAULT_REQUESTS,
                        help=f"the slice: the first N requests of each trace (default "
                             f"{DEFAULT_REQUESTS})")
    parser.add_argument("--rates", type=_factors, default=None,
                        help="comma-separated factors of each trace's recorded rate (default "
                             "per trace: azure 1..16, mooncake 1/16..1, x2 apart)")
    parser.add_argument("--block-sizes", type=positive_ints, default=ABLATION_BLOCK_SIZES,
                        help=f"block sizes of the {ABLATION_ALLOCATOR} ablation, "
                             f"comma-separated; empty to skip (default "
                             f"{','.join(map(str, ABLATION_BLOCK_SIZES))})")
    parser.add_argument("--ablation-trace", default=ABLATION_TRACE,
                        help="the trace of the block-size ablation and of the KV dtype "
                             f"comparison (default {ABLATION_TRACE})")
    add_kv_dtype_argument(parser, default=DEFAULT_KV_DTYPE)
    parser.add_argument("--model", default=None,
                        help="model preset for every trace (default: llama3-8b for Azure, "
                             "llama3.1-8b for Mooncake, llama3-8b otherwise)")
    parser.add_argument("--gpu", default="h100-80gb", help="GPU preset (default h100-80gb)")
    parser.add_argument("--truncate", action="store_true",
                        help="cut requests to the model's context instead of rejecting them")
    add_slo_arguments(parser)
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


def _factors(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers")
    if not values or any(not value > 0 for value in values):
        raise argparse.ArgumentTypeError(f"rate factors must be > 0, got {text!r}")
    return tuple(sorted(set(values)))


def _default_grain(spec: AllocatorSpec) -> int:
    return spec.param(spec.grain).default


def _variants(allocator: str) -> list[tuple[str, tuple[tuple[str, Any], ...]]]:
    """(directory name, parameters) of an allocator's runs: its default grain, written into
    run.json so that the ablation finds it, and for an allocator with an oracle, the oracle."""
    spec = SPECS[allocator]
    params = ((spec.grain, _default_grain(spec)),)
    out = [(allocator, params)]
    if spec.oracle_param:
        out.append((f"{allocator}-oracle", (*params, (spec.oracle_param, True))))
    return out


def _trace_dir(args: argparse.Namespace, trace_name: str) -> Path:
    return args.out_dir / Path(trace_name).name.split(".")[0]


def plan_jobs(args: argparse.Namespace) -> list[Job]:
    """Every allocator variant at every rate of each trace, then the ablation runs and the KV
    dtype comparison's."""
    jobs = []
    for trace_name in args.traces:
        model = args.model or TRACE_MODELS.get(trace_name, DEFAULT_MODEL)
        rates = args.rates or TRACE_RATES.get(trace_name, OTHER_RATES)
        for rate in rates:
            rate_dir = _trace_dir(args, trace_name) / f"x{rate:g}"
            jobs += [Job(trace_name, model, rate, allocator, params, rate_dir / name, False,
                         args.kv_dtype)
                     for allocator in args.allocators for name, params in _variants(allocator)]
        if trace_name == args.ablation_trace and ABLATION_ALLOCATOR in args.allocators:
            rate = min(rates, key=lambda r: abs(r - ABLATION_RATE))
            jobs += _ablation_jobs(trace_name, model, rate, _trace_dir(args, trace_name),
                                   args.block_sizes, args.kv_dtype)
        if trace_name == args.ablation_trace and KV_DTYPE_ALLOCATOR in args.allocators:
            jobs += _kv_dtype_jobs(trace_name, model, rates, _trace_dir(args, trace_name),
                                   args.kv_dtype)
    return jobs


def _ablation_jobs(trace_name: str, model: str, rate: float, trace_dir: Path,
                   sizes: tuple[int, ...], kv_dtype: str) -> list[Job]:
    spec = SPECS[ABLATION_ALLOCATOR]
    short = spec.param(spec.grain).label or spec.grain
    return [Job(trace_name, model, rate, spec.name, ((spec.grain, size),),
                trace_dir / f"x{rate:g}" / f"{spec.name}-{short}{size}", True, kv_dtype)
            for size in sizes if size != _default_grain(spec)]


def _kv_dtype_jobs(trace_name: str, model: str, rates: tuple[float, ...], trace_dir: Path,
                   study_dtype: str) -> list[Job]:
    """The comparison allocator's default variant at every rate with each other KV dtype."""
    name, params = _variants(KV_DTYPE_ALLOCATOR)[0]
    return [Job(trace_name, model, rate, KV_DTYPE_ALLOCATOR, params,
                trace_dir / f"x{rate:g}" / f"{name}-{dtype}", False, dtype)
            for dtype in KV_DTYPES if dtype != study_dtype for rate in rates]


def run_job(job: Job, trace, base, progress=False) -> tuple[Job, float]:
    """Simulate one job and write its run directory; return it with its wall time."""
    import workloads
    from harness import AllocatorConfig, simulate, write_run
    from harness.model.presets import model_preset

    started = time.perf_counter()
    config = replace(base, model=model_preset(job.model), kv_dtype=job.kv_dtype,
                     allocator=AllocatorConfig.of(job.allocator, **dict(job.params)))
    # Loaded again from its spec at the job's rate, so that run.json can replay it (--from).
    spec = workloads.TraceSpec.from_dict({**trace.attrs["spec"], "rate_scale": job.rate})
    write_run(simulate(config, spec.load(), progress=progress), job.out_dir)
    return job, time.perf_counter() - started


def _load_traces(args: argparse.Namespace) -> dict[str, Any]:
    """Each of --traces cut to its slice (and, with --truncate, to its model's context)."""
    import workloads
    from harness.model.presets import model_preset

    traces = {}
    for name in args.traces:
        limit = model_preset(args.model or TRACE_MODELS.get(name, DEFAULT_MODEL)).max_model_len
        cap = limit if args.truncate else None
        traces[name] = workloads.TraceSpec(name, max_requests=args.requests, cap_lengths_to=cap,
                                           **trace_load_options(args)).load()
    return traces


class _Counter:
    """What a worker's engine calls as requests finish: batched puts on the parent's queue."""

    EVERY = 50

    def __init__(self, queue) -> None:
        self.queue = queue
        self.pending = 0

    def __call__(self, done: int) -> None:
        self.pending += done
        if self.pending >= self.EVERY:
            self.queue.put(self.pending)
            self.pending = 0


def _counted_job(job: Job, trace, base, queue) -> tuple[Job, float]:
    counter = _Counter(queue)
    result = run_job(job, trace, base, progress=counter)
    queue.put(counter.pending)
    return result


def _run_all(jobs: list[Job], traces: dict, base, workers: int, progress: bool) -> list[float]:
    """Run every job; the bar counts finished requests over all runs, so it moves inside each."""
    from tqdm import tqdm

    # Longest runs first, so that the workers stay busy to the end.
    order = sorted(jobs, key=lambda job: -SPECS[job.allocator].cost_hint
                   * float(traces[job.trace_name]["prompt_tokens"].sum()))
    total = sum(len(traces[job.trace_name]) for job in jobs)
    bar = tqdm(total=total, unit="req", desc=f"simulating {len(jobs)} runs", file=sys.stderr,
               disable=not progress)
    walls = {}
    if workers <= 1:
        for job in order:
            done, walls[job] = run_job(job, traces[job.trace_name], base, progress=bar.update)
    else:
        walls = _run_pool(order, traces, base, workers, bar)
    bar.close()
    return [walls[job] for job in jobs]


def _run_pool(order: list[Job], traces: dict, base, workers: int, bar) -> dict[Job, float]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from queue import Empty

    walls = {}
    with multiprocessing.Manager() as manager, ProcessPoolExecutor(max_workers=workers) as pool:
        queue = manager.Queue()
        pending = {pool.submit(_counted_job, job, traces[job.trace_name], base, queue)
                   for job in order}
        while pending:
            finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                job, walls[job] = future.result()
            try:
                while True:
                    bar.update(queue.get_nowait())
            except Empty:
                pass
    return walls


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(args: argparse.Namespace) -> int:
    from harness import RunConfig
    from harness.cli.report import allocator_facts, trace_slos
    from harness.model.presets import gpu_preset
    from reports.build import build_report
    from reports.load import load_run
    from reports.study import split_ablation, split_kv_dtype, summary_lines, trace_studies

    started = time.perf_counter()
    slos = trace_slos(args)
    base = RunConfig(gpu=gpu_preset(args.gpu), seed=args.seed)
    traces = _load_traces(args)
    jobs = plan_jobs(args)
    _run_all(jobs, traces, base, args.jobs, not args.no_progress)
    facts = allocator_facts()
    dirs = [job.out_dir for job in jobs]
    titles = build_report([d for d, job in zip(dirs, jobs) if not job.ablation], args.output,
                          ablation_dirs=[d for d, job in zip(dirs, jobs) if job.ablation],
                          results_dir=args.results_dir, allocators=facts, slos=slos)
    study_runs, _ = split_kv_dtype([load_run(d) for d in dirs if d.exists()])
    runs, _ = split_ablation(study_runs, facts)
    print("\n".join(summary_lines(trace_studies(runs, facts, slos))))
    print(f"{len(jobs)} runs in {args.out_dir} ({_dir_bytes(args.out_dir) / 1e6:.1f} MB); "
          f"wrote {args.output} ({len(titles)} pages) in {time.perf_counter() - started:.0f} s")
    return 0
