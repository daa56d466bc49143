"""Tensor-parallel GPU benchmark: the all-reduce sweep the cost model is fitted from, and
measured decode runs at TP=N.

Part `allreduce`: for each width in --tp, one process per GPU times NCCL all-reduces of
tokens x hidden activations (the model's dtype) for the hidden size of every --models model and
tokens in TOKENS: CUDA events around ITERS all-reduces captured in one CUDA graph (launch gaps
out, as in a graph-replayed decode step; --eager-sweep times them launched one by one).
Writes allreduce_<gpu>.csv (harness.model.allreduce.ALLREDUCE_COLUMNS) and prints the fit of
latency + bytes / bandwidth per width with its worst relative error.

Part `decode`: for each model and width, the engine replays the trace slice over the ranks
(harness.gpu.tp_run); every measured step is then priced by the cost model with the fitted
all-reduce term and with the datasheet guess, on that step's own batch, by the profile at that
width where --profile-dir (or the committed results) holds one (kvharness profile --tp N), and
by the measured sweep alone (2 x layers all-reduces of the step's tokens x hidden, interpolated
in the sweep); the simulated run (the width's profile, else the fitted all-reduce term) against
the measured one as bench_fidelity.py gives them: total time, TTFT p50 and p99, throughput,
simulated / measured - 1. Writes
gpu_decode_tp<N>_<gpu>.csv, one row per model, and the runs as runs-tp<N>-<model>.tar.gz (the
measured run with its step_log.csv: each step's batch, which the cost model prices).

    PYTHONPATH=. python benchmarks/bench_gpu_tp.py --tp 2 --out "$OUT"
    kvharness profile --model llama3-8b --tp 2 --out "$OUT" && \
        PYTHONPATH=. python benchmarks/bench_gpu_tp.py --tp 2 --models llama3-8b \
        --profile-dir "$OUT" --out "$OUT"   # the profile's pricing too
    PYTHONPATH=. python benchmarks/bench_gpu_tp.py --device cpu --tp 2 --models tiny \\
        --dtype float32 --requests 6 --budget-slots 4096   # a smoke run on gloo
"""
from __future__ import annotations

import os
import sys

from harness.gpu.tp_run import free_port, multicast_off

multicast_off()  # before torch starts NCCL anywhere in this process or its children

import argparse  # noqa: E402
import pickle  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from bench_fidelity import run_errors  # noqa: E402
from bench_gpu_decode import device_slug, header, save_runs, write_csv  # noqa: E402
from harness.engine.executor import CostModelExecutor  # noqa: E402
from harness.engine.loop import simulate  # noqa: E402
from harness.gpu.executor import DTYPES  # noqa: E402
from harness.gpu.setup import gpu_run_config, load_slice  # noqa: E402
from harness.gpu.tp_run import run_tensor_parallel  # noqa: E402
from harness.model.allreduce import (ALLREDUCE_COLUMNS, AllReduceFit,  # noqa: E402
                                     AllReduceFitError, fit_allreduce)
from harness.model.costmodel import CostModel  # noqa: E402
from harness.model.fitted import fitted_cost_model  # noqa: E402
from harness.model.presets import model_preset  # noqa: E402

TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
ITERS = 20  # all-reduces per timed replay
REPEATS = 5  # timed replays per size; the median is kept
DECODE_COLUMNS = (
    "model", "tp", "allocator", "requests", "completed", "output_tokens", "steps",
    "graph_steps", "measured_tok_s", "decode_step_tok_s", "mean_step_ms_measured",
    "allreduce_ms_per_step", "allreduce_share", "priced_ratio_fit", "priced_ratio_guess",
    "priced_ratio_fit_decode", "priced_ratio_guess_decode", "priced_ratio_profile",
    "mean_step_ms_simulated",
    "steps_simulated", "total_time_err", "ttft_p50_err", "ttft_p99_err", "throughput_err",
    "peak_kv_allocated_bytes", "wall_s",
)


# -- the all-reduce sweep -------------------------------------------------------------------------

def _time_allreduce_s(x: torch.Tensor, eager: bool) -> tuple[float, str]:
    """Median seconds of one all-reduce of x, and how it was launched."""
    cuda = x.device.type == "cuda"
    for _ in range(3):  # warm-up: buffers and channels set up outside the timing
        dist.all_reduce(x)
    if not cuda:
        samples = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            for _ in range(ITERS):
                dist.all_reduce(x)
            samples.append((time.perf_counter() - t0) / ITERS)
        return float(np.median(samples)), "host"
    run, mode = (lambda: [dist.all_reduce(x) for _ in range(ITERS)]), "eager"
    if not eager:
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(ITERS):
                dist.all_reduce(x)
        run, mode = graph.replay, "graph"
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples = []
    for _ in range(REPEATS):
        dist.barrier()
        torch.cuda.synchronize()
        start.record()
        run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 1e3 / ITERS)
    return float(np.median(samples)), mode


def _sweep_rank(rank: int, tp: int, port: int, device_type: str, dtype: str,
                hiddens: list[int], eager: bool, result_path: str) -> None:
    multicast_off()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cpu")
    if device_type == "cuda":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=rank,
                            world_size=tp)
    rows = []
    try:
        for hidden in hiddens:
            for tokens in TOKENS:
                # Zeros: sums stay finite however often the buffer is reduced in place.
                x = torch.zeros(tokens, hidden, dtype=DTYPES[dtype], device=device)
                seconds, mode = _time_allreduce_s(x, eager)
                size = x.numel() * x.element_size()
                rows.append({"tp": tp, "tokens": tokens, "hidden": hidden,
                             "dtype_bytes": x.element_size(), "message_bytes": size,
                             "latency_us": seconds * 1e6,
                             "bus_gbs": 2 * (tp - 1) / tp * size / seconds / 1e9, "mode": mode})
    finally:
        dist.destroy_process_group()
    if rank == 0:
        with open(result_path, "wb") as fh:
            pickle.dump(rows, fh)


def allreduce_sweep(args, tp: int, hiddens: list[int]) -> list[dict]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="bench_tp_") as tmp:
        path = str(Path(tmp) / "rows.pkl")
        mp.spawn(_sweep_rank, nprocs=tp, join=True,
                 args=(tp, free_port(), args.device.type, args.dtype, hiddens,
                       args.eager_sweep, path))
        with open(path, "rb") as fh:
            return pickle.load(fh)


def sweep_fit(sweep: pd.DataFrame, tp: int) -> AllReduceFit | None:
    """The sweep's all-reduce fit at this width, or None (and why, printed) where its times give
    none: a CPU smoke run's gloo timings need not grow with the message size."""
    try:
        return fit_allreduce(sweep, tp)
    except AllReduceFitError as error:
        print(f"no all-reduce fit: {error}", flush=True)
        return None


def run_sweeps(args, command: str) -> pd.DataFrame:
    hiddens = sorted({model_preset(m).hidden_size for m in args.models})
    rows = []
    for tp in args.tp:
        rows += allreduce_sweep(args, tp, hiddens)
        fit = sweep_fit(pd.DataFrame(rows), tp)
        if fit is not None:
            print(f"tp {tp}: all-reduce {fit.latency_s * 1e6:.1f} us + bytes / "
                  f"{fit.bytes_s / 1e9:.0f} GB/s over {fit.points} sizes, worst error "
                  f"{fit.max_relative_error:.1%}", flush=True)
    lines = header(args.device, command) + [
        f"# all-reduce: {args.dtype} tokens x hidden, median of {REPEATS} timings of "
        f"{ITERS} calls; bus_gbs = 2 (tp - 1) / tp x bytes / time"]
    write_csv(args.out / f"allreduce_{args.slug}.csv", lines, rows, ALLREDUCE_COLUMNS)
    return pd.DataFrame(rows)


# -- the decode runs ----------------------------------------------------------------------------

def step_allreduce_s(sweep: pd.DataFrame, model, tp: int, tokens: np.ndarray) -> np.ndarray:
    """Each step's all-reduce seconds from the measured sweep alone: 2 x layers all-reduces
    of tokens x hidden, interpolated in log-log between the measured sizes."""
    rows = sweep[(sweep.tp == tp) & (sweep.hidden == model.hidden_size)].sort_values("tokens")
    one = np.exp(np.interp(np.log(np.maximum(tokens, 1)), np.log(rows.tokens.to_numpy(float)),
                           np.log(rows.latency_us.to_numpy(float) * 1e-6)))
    return 2 * model.num_layers * one


def price_steps(cost, log: pd.DataFrame) -> np.ndarray:
    """The cost model's seconds for each measured step, on the step's own batch (NaN for no
    model)."""
    if cost is None:
        return np.full(len(log), np.nan)
    return cost.step_s(
        prefill_tokens=log.prefill_tokens.to_numpy(), decode_tokens=log.decode_seqs.to_numpy(),
        prefill_context_tokens=log.prefill_context_tokens.to_numpy(),
        decode_context_tokens=log.decode_context_tokens.to_numpy(),
        prefill_attention_pairs=log.prefill_attention_pairs.to_numpy(),
        decode_max_context=log.decode_max_context.to_numpy(), maximum=np.maximum)


def _ratio(priced: np.ndarray, measured: np.ndarray) -> float:
    return float(np.median(priced / measured)) if len(measured) else float("nan")


def simulate_with_fit(config, trace, fit, profile_dir):
    """The cost model's run of the same slice, priced as a simulation of this width is: by the
    width's profile in profile_dir where one exists (kvharness profile --tp N), else by the
    roofline with this sweep's fitted all-reduce term (the guess where fit is None); and the
    three models that price the measured steps: the roofline with the fitted term (None
    without a fit), with the datasheet guess, and the profile's (None without one). The
    roofline's decode efficiency comes from the committed kernel tables, as in any simulated
    run."""
    made = []

    def factory(cfg, geometry):
        roofline = CostModelExecutor(cfg, geometry, roofline=True)
        efficiency = roofline.details["decode_efficiency"]
        guessed = CostModel.from_config(cfg, decode_efficiency=efficiency)
        fitted = None if fit is None else CostModel.from_config(
            cfg, decode_efficiency=efficiency, allreduce=fit)
        models = (fitted, guessed,
                  fitted_cost_model(cfg, geometry.block_size, results_dir=profile_dir))
        made.append(models)
        if models[2] is not None:
            return CostModelExecutor(cfg, geometry, results_dir=profile_dir)
        roofline.model = guessed if fitted is None else fitted
        return roofline

    sim = simulate(config, trace, executor_factory=factory)
    return (sim, *made[0])


def decode_row(args, model_name: str, tp: int, trace, sweep) -> dict:
    config = gpu_run_config(args.device, model=model_name, allocator=args.allocator,
                            budget_slots=args.budget_slots, preemption=args.preemption, tp=tp)
    started = time.perf_counter()
    ran = run_tensor_parallel(config, trace, device_type=args.device.type, dtype=args.dtype,
                              cuda_graphs=not args.eager_decode)
    wall_s = time.perf_counter() - started
    sim, fitted, guessed, profiled = simulate_with_fit(config, trace, sweep_fit(sweep, tp),
                                                       args.profile_dir)
    save_runs(args.out, f"tp{tp}-{model_name}", {f"gpu-tp{tp}": ran.result, "sim": sim},
              step_log=ran.step_log)
    log, steps, s = ran.step_log, ran.result.steps, ran.result.summary
    measured = log.step_s.to_numpy()
    decode = (log.prefill_seqs == 0).to_numpy()
    tokens = (log.decode_seqs + log.prefill_tokens).to_numpy()
    allreduce_s = step_allreduce_s(sweep, config.model, tp, tokens)
    priced_fit, priced_guess = price_steps(fitted, log), price_steps(guessed, log)
    priced_profile = price_steps(profiled, log)
    decode_steps = steps[steps.prefill_tokens == 0]
    return {
        "model": model_name, "tp": tp, "allocator": args.allocator, "requests": s["requests"],
        "completed": s["completed"], "output_tokens": s["output_tokens"], "steps": len(log),
        "graph_steps": int(log.graph.sum()),
        "measured_tok_s": s["output_tokens"] / measured.sum(),
        "decode_step_tok_s": decode_steps.decode_tokens.sum() / (decode_steps.step_ms.sum() / 1e3),
        "mean_step_ms_measured": measured.mean() * 1e3,
        "allreduce_ms_per_step": allreduce_s.mean() * 1e3,
        "allreduce_share": allreduce_s.sum() / measured.sum(),
        "priced_ratio_fit": _ratio(priced_fit, measured),
        "priced_ratio_guess": _ratio(priced_guess, measured),
        "priced_ratio_fit_decode": _ratio(priced_fit[decode], measured[decode]),
        "priced_ratio_guess_decode": _ratio(priced_guess[decode], measured[decode]),
        "priced_ratio_profile": _ratio(priced_profile, measured),
        "mean_step_ms_simulated": sim.summary["mean_step_ms"], "steps_simulated": len(sim.steps),
        **run_errors(sim.summary, s),
        "peak_kv_allocated_bytes": s["peak_kv_allocated_bytes"], "wall_s": wall_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "benchmarks/results")))
    parser.add_argument("--tp", default="2", help="comma-separated widths (one GPU per rank)")
    parser.add_argument("--models", default="llama3-8b,llama3-70b")
    parser.add_argument("--parts", default="allreduce,decode")
    parser.add_argument("--trace", default="azure-conv")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rate-scale", type=float, default=10.0)
    parser.add_argument("--allocator", default="paged")
    parser.add_argument("--preemption", default="recompute", choices=("recompute", "swap"))
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--budget-slots", type=int, help="KV budget instead of the memory sums")
    parser.add_argument("--profile-dir", type=Path,
                        help="where profiles at the widths are (default: the committed ones)")
    parser.add_argument("--eager-sweep", action="store_true",
                        help="time all-reduces launched one by one instead of graph-replayed")
    parser.add_argument("--eager-decode", action="store_true",
                        help="no CUDA graphs in the decode runs (if capturing NCCL fails)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    args.device = torch.device(args.device)
    args.tp = [int(t) for t in args.tp.split(",")]
    args.models = [m for m in args.models.split(",") if m]
    parts = set(args.parts.split(","))
    command = "python benchmarks/bench_gpu_tp.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    args.slug = device_slug(args.device)
    if "allreduce" in parts:
        sweep = run_sweeps(args, command)
    else:  # an earlier sweep: in --out, else the committed one
        from reports.schema import read_measurement, results_dir

        name = f"allreduce_{args.slug}.csv"
        found = args.out / name if (args.out / name).exists() else results_dir() / name
        sweep = read_measurement(found).table
    if "decode" not in parts:
        return 0
    trace = load_slice(args.trace, count=args.requests, rate_scale=args.rate_scale)
    for tp in args.tp:
        rows = []
        for model_name in args.models:
            rows.append(decode_row(args, model_name, tp, trace, sweep))
            r = rows[-1]
            print(f"tp {tp} {model_name}: {r['completed']}/{r['requests']} done, "
                  f"{r['measured_tok_s']:.0f} tok/s, step {r['mean_step_ms_measured']:.2f} ms, "
                  f"all-reduce {r['allreduce_ms_per_step']:.2f} ms ({r['allreduce_share']:.1%}); "
                  f"priced/measured {r['priced_ratio_fit']:.2f} fit, "
                  f"{r['priced_ratio_guess']:.2f} guess, {r['priced_ratio_profile']:.2f} profile",
                  flush=True)
            lines = header(args.device, command) + [
                f"# trace: {args.trace} requests [0, {len(trace)}) arrivals x{args.rate_scale:g}; "
                f"{args.dtype} random weights; preemption {args.preemption}",
                "# allreduce_*: 2 x layers all-reduces of tokens x hidden per step from the "
                f"measured sweep (allreduce_{args.slug}.csv); priced_ratio_*: median over "
                "steps of the cost model's seconds (the roofline with the fitted or the guessed "
                "all-reduce term, or the width's profile: NaN without one) / measured"]
            write_csv(args.out / f"gpu_decode_tp{tp}_{args.slug}.csv", lines, rows,
                      DECODE_COLUMNS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
