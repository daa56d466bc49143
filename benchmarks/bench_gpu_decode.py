"""GPU benchmark: every allocator replays one slice of a real trace on the device.

For each allocator the engine runs the slice with the GpuExecutor (random weights at the model's
real shape, KV in tensors that follow the allocator's segments, step time from CUDA events),
then the cost model prices the same slice. The summary row per allocator: measured tokens/s,
peak KV memory the pool really held, allocator utilization (measured run and simulated run),
simulated vs measured mean step time (the cost model's error). First the peer baseline: the first
--baseline-requests requests, all arriving at once, through our engine (paged) and through
transformers' generate with static batching on the same weights.

Every measured step is also priced against its hardware floor (benchmarks/gpu_steps.py) and
binned by kind and size: one row per bin and allocator.

Writes to --out: gpu_decode_baseline_<device>.csv, gpu_decode_<device>.csv and
gpu_steps_<device>.csv (per allocator, rewritten after each) and runs-<name>.tar.gz (steps.parquet,
requests.parquet, run.json of each run, and the GPU runs' per-step log step_log.csv).

--time-limit-s bounds the whole run: the peer baseline, last, is left out when less than
BASELINE_MIN_S remain, and starts no static batch that the pace of the ones before says would
end past the limit; its table says how many requests transformers covered.

    PYTHONPATH=. python benchmarks/bench_gpu_decode.py --out "$OUT"
"""
from __future__ import annotations

import argparse
import csv
import datetime
import gc
import os
import re
import tempfile
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
import triton

import gpu_steps

from allocators import SPECS
from harness.model.budget import kv_budget
from harness.engine.loop import simulate
from harness.gpu.baseline import build_hf_model, static_batch_generate
from harness.gpu.executor import build_decoder
from harness.gpu.prompts import prompt_tokens
from harness.gpu.run import run_on_device
from harness.gpu.setup import device_name, gpu_run_config, load_slice
from harness.model.config import DECODE_BALANCE
from harness.model.presets import model_preset
from harness.engine.recorder import write_run

ALLOCATORS = tuple(SPECS)
SEGMENT_TOKENS = 65536  # the segmented and hybrid allocators' default segment
SUMMARY_COLUMNS = (
    "allocator", "block_size", "requests", "completed", "output_tokens", "steps",
    "measured_tok_s", "decode_step_tok_s", "wall_tok_s", "peak_kv_allocated_bytes",
    "peak_backed_bytes", "utilization_measured", "utilization_simulated",
    "mean_step_ms_measured", "mean_step_ms_simulated", "step_ms_error", "preemptions",
    "ttft_p50_s", "tpot_p50_s", "host_prep_s", "host_prep_p50_ms", "host_prep_p99_ms",
    "host_prep_max_ms", "host_prep_cpu_p99_ms", "host_prep_cpu_max_ms",
    "balanced_decode_steps", "wall_s",
)
BASELINE_MIN_S = 90  # our engine's offline run and one static batch of transformers, with margin
BASELINE_COLUMNS = (
    "engine", "requests", "batch_size", "output_tokens", "seconds", "tok_s", "speedup",
)


def device_slug(device: torch.device) -> str:
    name = device_name(device).lower()
    found = re.search(r"\b([a-z]\d{2,3})\b", name)
    return found.group(1) if found else re.sub(r"[^a-z0-9]+", "_", name).strip("_")


def header(device: torch.device, command: str) -> list[str]:
    return [f"# device: {device_name(device)}", f"# torch: {torch.__version__}",
            f"# triton: {triton.__version__}", f"# date: {datetime.date.today().isoformat()}",
            f"# command: {command}"]


def write_csv(path: Path, lines: list[str], rows: list[dict], columns) -> None:
    with open(path, "w", newline="") as fh:
        fh.write("\n".join(lines) + "\n")
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row[k]) for k in columns})


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else value


def save_runs(out: Path, name: str, results: dict, step_log=None) -> None:
    """Run directories (steps.parquet, requests.parquet, run.json) as out/runs-<name>.tar.gz, written
    as soon as they exist, so a cut-off benchmark still returns what it finished."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpu_decode_"))
    with tarfile.open(out / f"runs-{name}.tar.gz", mode="w:gz") as tar:
        for run_name, result in results.items():
            write_run(result, tmp / run_name)
            if step_log is not None and run_name.startswith("gpu-"):
                step_log.to_csv(tmp / run_name / "step_log.csv", index=False)
            for path in sorted((tmp / run_name).iterdir()):
                tar.add(path, arcname=f"{run_name}/{path.name}")


def free_device() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def budget_slots(args) -> int:
    """The memory arithmetic's KV budget, rounded down to whole 65536-token segments: every
    allocator gets the same budget, and the on-demand ones have no partial last segment (the
    pool backs every segment whole)."""
    if args.budget_slots is not None:
        return args.budget_slots
    config = gpu_run_config(args.device, model=args.model, allocator="paged")
    return kv_budget(config).slots // SEGMENT_TOKENS * SEGMENT_TOKENS


def warm_up(args, trace, decoder) -> None:
    """One short untimed run, so that library initialisation (cuBLAS, SDPA) is done before
    the first measured step; each run also compiles its own kernel variants before stepping."""
    from workloads import cap_lengths, take

    short = cap_lengths(take(trace, 8), 256)
    config = gpu_run_config(args.device, model=args.model, allocator="paged",
                            budget_slots=args.budget_slots)
    run_on_device(config, short, decoder)
    free_device()


def run_allocator(args, name: str, trace, decoder):
    config = gpu_run_config(args.device, model=args.model, allocator=name,
                            preemption=args.preemption, budget_slots=args.budget_slots)
    started = time.perf_counter()
    result, executor = run_on_device(config, trace, decoder)
    wall_s = time.perf_counter() - started
    details = executor.details
    block_size = executor.pool.block_size
    steps = result.steps
    step_log = executor.step_log.frame()
    del executor
    free_device()
    sim = simulate(config, trace)
    save_runs(args.out, name, {f"gpu-{name}": result, f"sim-{name}": sim}, step_log)
    s, ss = result.summary, sim.summary
    busy_s = details["device_s"]
    prep_ms = step_log.host_prep_s.to_numpy() * 1e3
    cpu_ms = step_log.host_prep_cpu_s.to_numpy() * 1e3
    decode_only = steps[steps.prefill_tokens == 0]
    row = {
        "allocator": name, "block_size": block_size, "requests": s["requests"],
        "completed": s["completed"], "output_tokens": s["output_tokens"], "steps": len(steps),
        "measured_tok_s": s["output_tokens"] / busy_s,
        "decode_step_tok_s": decode_only.decode_tokens.sum() / (decode_only.step_ms.sum() / 1e3),
        "wall_tok_s": s["output_tokens"] / wall_s,
        "peak_kv_allocated_bytes": s["peak_kv_allocated_bytes"],
        "peak_backed_bytes": s["peak_backed_bytes"],
        "utilization_measured": s["utilization_mean"], "utilization_simulated": ss["utilization_mean"],
        "mean_step_ms_measured": s["mean_step_ms"], "mean_step_ms_simulated": ss["mean_step_ms"],
        "step_ms_error": ss["mean_step_ms"] / s["mean_step_ms"] - 1.0,
        "preemptions": s["preemptions"], "ttft_p50_s": s["ttft_p50_s"], "tpot_p50_s": s["tpot_p50_s"],
        "host_prep_s": details["host_prep_s"], "host_prep_p50_ms": float(np.median(prep_ms)),
        "host_prep_p99_ms": float(np.percentile(prep_ms, 99)),
        "host_prep_max_ms": float(prep_ms.max()),
        "host_prep_cpu_p99_ms": float(np.percentile(cpu_ms, 99)),
        "host_prep_cpu_max_ms": float(cpu_ms.max()),
        "balanced_decode_steps": details["balanced_decode_steps"], "wall_s": wall_s,
    }
    print(f"{name:9s} bs {block_size:3d}: {row['completed']}/{row['requests']} done, "
          f"{row['measured_tok_s']:.0f} tok/s measured ({row['wall_tok_s']:.0f} wall), "
          f"peak KV {row['peak_kv_allocated_bytes'] / 2**30:.1f} GiB, util "
          f"{row['utilization_measured']:.3f} (sim {row['utilization_simulated']:.3f}), step "
          f"{row['mean_step_ms_measured']:.2f} ms (sim {row['mean_step_ms_simulated']:.2f})",
          flush=True)
    return row, step_log


def run_baseline(args, trace, decoder, deadline: float | None) -> list[dict]:
    """Our engine (paged) and transformers' generate on the same requests, all at t=0 (generate
    on the first of its static batches that fit before the deadline)."""
    from workloads import take

    offline = take(trace, args.baseline_requests)
    offline["arrival_s"] = 0.0
    config = gpu_run_config(args.device, model=args.model, allocator="paged",
                            budget_slots=args.budget_slots)
    started = time.perf_counter()
    result, executor = run_on_device(config, offline, decoder)
    wall_s = time.perf_counter() - started
    busy_s = executor.details["device_s"]
    tokens = result.summary["output_tokens"]
    del executor
    free_device()
    save_runs(args.out, "offline", {"gpu-offline-paged": result})
    hf = build_hf_model(decoder.config, decoder.weights)
    prompts = [prompt_tokens(rid, int(p), decoder.config.vocab_size, seed=config.seed).tolist()
               for rid, p in enumerate(offline.prompt_tokens)]
    outputs = offline.output_tokens.astype(int).tolist()
    warm = static_batch_generate(hf, prompts[:2], [2, 2], batch_size=2)  # load kernels
    del warm
    base = static_batch_generate(hf, prompts, outputs, batch_size=args.baseline_batch,
                                 deadline=deadline)
    ours = tokens / busy_s
    rows = [
        {"engine": "kvharness (paged, step time)", "requests": len(offline), "batch_size": 0,
         "output_tokens": tokens, "seconds": busy_s, "tok_s": ours, "speedup": ours / base.tokens_per_s},
        {"engine": "kvharness (paged, wall)", "requests": len(offline), "batch_size": 0,
         "output_tokens": tokens, "seconds": wall_s, "tok_s": tokens / wall_s,
         "speedup": tokens / wall_s / base.tokens_per_s},
        {"engine": "transformers generate (static batches)", "requests": base.requests,
         "batch_size": base.batch_size, "output_tokens": base.output_tokens,
         "seconds": base.seconds, "tok_s": base.tokens_per_s, "speedup": 1.0},
    ]
    for r in rows:
        print(f"{r['engine']:40s} {r['output_tokens']} tokens in {r['seconds']:.1f} s: "
              f"{r['tok_s']:.0f} tok/s (x{r['speedup']:.1f})", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/results")))
    parser.add_argument("--model", default="llama3-8b")
    parser.add_argument("--trace", default="azure-conv")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rate-scale", type=float, default=10.0)
    parser.add_argument("--allocators", default=",".join(ALLOCATORS))
    parser.add_argument("--preemption", default="recompute", choices=("recompute", "swap"))
    parser.add_argument("--baseline-requests", type=int, default=64)
    parser.add_argument("--baseline-batch", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--budget-slots", type=int, help="KV budget instead of the memory sums")
    parser.add_argument("--decode-balance", choices=sorted(DECODE_BALANCE), default="auto",
                        help="which decode steps run over work lists (kvharness gpu's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--time-limit-s", type=float, default=0.0,
                        help="bound on the whole run, 0: none (the baseline stops in time)")
    args = parser.parse_args()
    args.device = torch.device(args.device)
    command = "python benchmarks/bench_gpu_decode.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    slug = device_slug(args.device)
    trace = load_slice(args.trace, start=args.start, count=args.requests, rate_scale=args.rate_scale)
    started = time.perf_counter()
    deadline = started + args.time_limit_s if args.time_limit_s else None
    decoder = build_decoder(model_preset(args.model), device=args.device, dtype=args.dtype,
                            decode_balance=args.decode_balance)
    if args.device.type == "cuda":
        torch.cuda.synchronize()
    print(f"{device_name(args.device)}: {args.model} weights in "
          f"{time.perf_counter() - started:.1f} s; slice {args.trace} [{args.start}, "
          f"{args.start + len(trace)}) x{args.rate_scale:g} rate", flush=True)
    lines = header(args.device, command) + [
        f"# trace: {args.trace} requests [{args.start}, {args.start + len(trace)}) arrivals "
        f"x{args.rate_scale:g}; model {args.model} {args.dtype} random weights; "
        f"preemption {args.preemption}"
        + f"; decode balance {args.decode_balance}"
    ]
    args.budget_slots = budget_slots(args)
    lines.append(f"# budget: {args.budget_slots} KV slots for every allocator")
    warm_up(args, trace, decoder)
    ceilings = gpu_steps.measure_ceilings(decoder)
    # The eager launch's host time needs the GPU (its case is a CUDA one): a CPU run has none.
    host_lines = ([f"# paged_decode eager host time at 1x4096: "
                   f"{gpu_steps.paged_decode_host_us():.0f} us (median of 200 calls)"]
                  if args.device.type == "cuda" else [])
    print(f"warm-up and ceilings done at {time.perf_counter() - started:.0f} s", flush=True)
    step_lines = lines + [
        f"# ceilings: copy {ceilings.copy_bytes_s / 1e12:.2f} TB/s (read + write); SDPA causal "
        f"flash {ceilings.sdpa_flop_s / 1e12:.0f} TFLOP/s; linear layers "
        f"{ceilings.layers_s[0] * 1e3:.2f} ms at 1 token, {ceilings.layers_s[-1] * 1e3:.1f} ms at "
        f"{gpu_steps.TOKEN_GRID[-1]} (torch.matmul)",
        *host_lines,
        "# floor: max(GEMM + KV bytes / copy + prefill attention FLOPs / SDPA rate, "
        "(weight + KV bytes) / copy) per step, median per bin; measured: median step time",
    ]
    print(*step_lines[len(lines):-1], sep="\n", flush=True)
    rows, bins, logs = [], [], {}
    for name in filter(None, args.allocators.split(",")):
        row, step_log = run_allocator(args, name, trace, decoder)
        rows.append(row)
        logs[name] = step_log
        bins += gpu_steps.bin_rows(name, step_log, ceilings)
        print(gpu_steps.host_notes(name, step_log), flush=True)
        write_csv(args.out / f"gpu_decode_{slug}.csv", lines, rows, SUMMARY_COLUMNS)
        write_csv(args.out / f"gpu_steps_{slug}.csv", step_lines, bins, gpu_steps.STEP_COLUMNS)
        print(f"{name} done at {time.perf_counter() - started:.0f} s", flush=True)
    for b in bins:
        print(f"{b['allocator']:9s} {b['kind']:6s} {b['bin']:>9s} {b['steps']:4d} steps "
              f"{b['measured_ms']:7.2f} ms / floor {b['floor_ms']:7.2f} = {b['ratio']:.2f}")
    same = gpu_steps.same_batch_notes(logs)
    write_csv(args.out / f"gpu_steps_{slug}.csv", step_lines + [f"# note: {n}" for n in same],
              bins, gpu_steps.STEP_COLUMNS)
    print("\n".join(gpu_steps.spread_notes(bins) + same), flush=True)
    # The peer baseline last: transformers' generate is the slowest part, and a run cut off
    # by a time limit still leaves the step bins.
    if deadline is not None and time.perf_counter() > deadline - BASELINE_MIN_S:
        print(f"no peer baseline: under {BASELINE_MIN_S} s of the time limit left", flush=True)
    elif args.baseline_requests:
        base_rows = run_baseline(args, trace, decoder, deadline)
        write_csv(args.out / f"gpu_decode_baseline_{slug}.csv",
                  header(args.device, command)
                  + [f"# requests: the first {args.baseline_requests} of the slice, all arriving "
                     f"at t=0; greedy; {args.dtype}; budget {args.budget_slots} slots; "
                     "transformers' tokens/s over the static batches it ran (requests column)"],
                  base_rows, BASELINE_COLUMNS)
    print(f"total {time.perf_counter() - started:.0f} s -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
