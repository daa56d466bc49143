"""GPU benchmark: how well the fitted cost model predicts the GPU, on runs it was not fitted to.

1. Profile: `kvharness profile`'s grid of synthetic steps on this GPU (or --profile-dir's
   profile_<model>_<gpu>.csv), then the fit (harness.model.fitted).
2. For each slice and allocator: replay the slice with the GpuExecutor, recording every
   measured step's batch aggregates, and simulate the same slice priced by the fitted model.
3. Errors, simulated / measured - 1: per step (each measured step's batch priced by the fitted
   model; median and p90 of |error|), and of the runs' total time, TTFT p50/p99 and throughput.

Writes to --out, each rewritten as soon as a run ends (a cut-off benchmark returns what it
finished): profile_<model>_<gpu>.csv, fidelity_<gpu>.csv (reports.schema.FIDELITY_COLUMNS) and
fidelity_runs_<gpu>.tar.gz (both run directories of every slice and allocator, the measured
one with step_batches.csv), which reports/fidelity.py turns into pages.

    PYTHONPATH=. python benchmarks/bench_fidelity.py --out "$OUT"
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling GPU benchmark's helpers

from bench_gpu_decode import ALLOCATORS, budget_slots, free_device, header  # noqa: E402
from harness.engine.batch import Batch  # noqa: E402
from harness.engine.executor import CostModelExecutor, KVGeometry  # noqa: E402
from harness.engine.loop import RunResult, simulate  # noqa: E402
from harness.engine.recorder import write_run  # noqa: E402
from harness.model.config import DECODE_BALANCE  # noqa: E402
from harness.model.fitted import (BATCH_FEATURES, FittedCostModel, fitted_cost_model,  # noqa: E402
                                  price_rows)
from reports.schema import (FIDELITY_COLUMNS, RUN_JSON, STEP_BATCH_COLUMNS,  # noqa: E402
                            STEP_BATCHES_FILE, STEPS_FILE, fidelity_run_name, read_table)


@dataclass(frozen=True)
class Slice:
    name: str
    trace: str
    start: int
    count: int
    rate_scale: float


# Azure conversations at two loads, and Mooncake conversations, whose shared prefixes give
# prefix-cache hits (long prompts: fewer requests fill the same time).
SLICES = (
    Slice("azure-10x", "azure-conv", 0, 300, 10.0),
    Slice("mooncake-2x", "mooncake-conv", 0, 60, 2.0),
    Slice("azure-4x", "azure-conv", 0, 200, 4.0),
)
# --quick: the whole path at a toy size (a CPU check of the script, not a measurement).
QUICK_SLICES = tuple(Slice(s.name, s.trace, s.start, 4, s.rate_scale) for s in SLICES)
QUICK_MAX_MODEL_LEN = 200
WARM_UP_REQUESTS = 8


def step_kind(prefill_tokens: int, decode_tokens: int) -> str:
    if prefill_tokens and decode_tokens:
        return "mixed"
    if prefill_tokens:
        return "prefill"
    return "decode" if decode_tokens else "memory"


class BatchRecording:
    """An executor that runs another and keeps each step's batch aggregates and time (the
    engine calls step() once per recorded step, in order)."""

    def __init__(self, inner, geometry: KVGeometry) -> None:
        self.inner = inner
        self.geometry = geometry
        self.name, self.device, self.needs_layouts = inner.name, inner.device, inner.needs_layouts
        self.rows: list[tuple] = []

    @property
    def details(self) -> dict:
        return self.inner.details

    @property
    def kv_allocated_bytes(self) -> int:
        return self.inner.kv_allocated_bytes

    def step(self, batch: Batch) -> float:
        seconds = self.inner.step(batch)
        self.rows.append(tuple(getattr(batch, f) for f in BATCH_FEATURES)
                         + (batch.pcie_tokens, seconds * 1e3))
        return seconds

    def frame(self, model: FittedCostModel) -> pd.DataFrame:
        """STEP_BATCH_COLUMNS: the recorded steps, each priced by model."""
        columns = [*BATCH_FEATURES, "swap_tokens", "measured_ms"]
        frame = pd.DataFrame(self.rows, columns=columns)
        frame.insert(0, "step", np.arange(len(frame)))
        frame.insert(1, "kind", [step_kind(p, d) for p, d in
                                 zip(frame.prefill_tokens, frame.decode_tokens)])
        frame["predicted_ms"] = price_rows(model, frame) * 1e3 if len(frame) else []
        return frame[list(STEP_BATCH_COLUMNS)]


def _ratio_err(simulated: float, measured: float) -> float:
    if not measured or not np.isfinite(measured) or not np.isfinite(simulated):
        return float("nan")
    return simulated / measured - 1.0


def fidelity_row(slice_name: str, allocator: str, measured_dir: Path,
                 simulated_dir: Path) -> dict:
    """One FIDELITY_COLUMNS row from the two run directories of a slice and allocator."""
    batches = pd.read_csv(measured_dir / STEP_BATCHES_FILE)
    step_err = np.abs(batches.predicted_ms / batches.measured_ms - 1.0).to_numpy()
    measured = json.loads((measured_dir / RUN_JSON).read_text())["summary"]
    simulated = json.loads((simulated_dir / RUN_JSON).read_text())["summary"]
    quantile = (lambda q: float(np.quantile(step_err, q))) if len(step_err) else \
        (lambda q: float("nan"))
    return {
        "slice": slice_name, "allocator": allocator,
        "steps_measured": len(read_table(measured_dir / STEPS_FILE)),
        "steps_simulated": len(read_table(simulated_dir / STEPS_FILE)),
        "step_err_median": quantile(0.5), "step_err_p90": quantile(0.9),
        **run_errors(simulated, measured),
    }


def run_errors(simulated: dict, measured: dict) -> dict:
    """The whole-run errors of FIDELITY_COLUMNS from two runs' summaries."""
    return {
        "total_time_err": _ratio_err(simulated["sim_time_s"], measured["sim_time_s"]),
        "ttft_p50_err": _ratio_err(simulated["ttft_p50_s"], measured["ttft_p50_s"]),
        "ttft_p99_err": _ratio_err(simulated["ttft_p99_s"], measured["ttft_p99_s"]),
        "throughput_err": _ratio_err(simulated["throughput_tok_s"],
                                     measured["throughput_tok_s"]),
    }


def write_runs(runs_dir: Path, measured: RunResult, simulated: RunResult, batches: pd.DataFrame,
               slice_name: str, allocator: str) -> tuple[Path, Path]:
    gpu_dir = write_run(measured, runs_dir / fidelity_run_name(slice_name, allocator, True))
    batches.to_csv(gpu_dir / STEP_BATCHES_FILE, index=False, lineterminator="\n")
    sim_dir = write_run(simulated, runs_dir / fidelity_run_name(slice_name, allocator, False))
    return gpu_dir, sim_dir


def pack(runs_dir: Path, tar_path: Path) -> None:
    with tarfile.open(tar_path, mode="w:gz") as tar:
        for run in sorted(runs_dir.iterdir()):
            for path in sorted(run.iterdir()):
                tar.add(path, arcname=f"{run.name}/{path.name}")


def write_table(path: Path, lines: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        fh.write("".join(f"{line}\n" for line in lines))
        pd.DataFrame(rows, columns=list(FIDELITY_COLUMNS)).to_csv(
            fh, index=False, lineterminator="\n", float_format="%.6g")


def measured_and_simulated(args, config, trace, decoder) -> tuple[RunResult, RunResult,
                                                                 pd.DataFrame]:
    """The slice on the GPU (recording batches) and priced by the fitted model."""
    from harness.gpu.executor import GpuExecutor

    made: list[BatchRecording] = []

    def on_gpu(cfg, geometry):
        made.append(BatchRecording(GpuExecutor(cfg, geometry, decoder=decoder, trace=trace),
                                   geometry))
        return made[0]

    measured = simulate(config, trace, executor_factory=on_gpu)
    recording = made[0]
    model = fitted_cost_model(config, recording.geometry.block_size,
                              results_dir=args.profile_dir)
    batches = recording.frame(model)
    del made[:], recording
    free_device()
    simulated = simulate(config, trace, executor_factory=lambda cfg, geometry: CostModelExecutor(
        cfg, geometry, results_dir=args.profile_dir))
    return measured, simulated, batches


def profile_and_fit(args, decoder) -> str:
    """The profile this run fits to (measured now unless --profile-dir has one); its name."""
    from harness.gpu.attention import balance_skew
    from harness.gpu.profile import (ProfileSettings, measure_profile, profile_command,
                                     profile_header, write_profile)
    from harness.gpu.profile_grid import QUICK_GRID, GridSpec
    from harness.gpu.setup import gpu_run_config
    from harness.model.fitted import profile_path

    config = gpu_run_config(args.device, model=args.model, allocator="paged",
                            budget_slots=args.budget_slots)
    path = profile_path(args.model, config.gpu.name, args.profile_dir)
    if not path.is_file():
        grid = QUICK_GRID if args.quick else GridSpec(
            max_num_seqs=config.scheduler.max_num_seqs,
            max_num_batched_tokens=config.scheduler.max_num_batched_tokens)
        settings = ProfileSettings(
            grid=grid,
            repeats=args.repeats, deadline=time.monotonic() + args.profile_limit_s)
        frame = measure_profile(config, decoder, settings,
                                log=lambda line: print(line, flush=True))
        command = profile_command(["profile", "--model", args.model, "--out", str(args.out)])
        # Named by the run config's GPU preset, which is what the cost model looks up.
        path = write_profile(profile_path(args.model, config.gpu.name, args.out),
                             profile_header(args.device, config, command, settings,
                                            balance_skew(args.device, args.decode_balance)), frame)
        args.profile_dir = args.out
        free_device()
    model = fitted_cost_model(config, 16, results_dir=args.profile_dir)
    print(f"fit of {path.name}: " + ", ".join(f"{k} {v:.4g}" for k, v in model.details().items()
                                              if isinstance(v, float)), flush=True)
    return path.name


def warm_up(args, decoder) -> None:
    """One untimed paged run of each slice's first WARM_UP_REQUESTS requests, whole: library
    initialisation and the GEMM kernels of step sizes up to a full chunk are loaded before the
    first measured run, which paid for them otherwise (the first allocator's first step: an
    8,192-token prefill of 0.2 s took 1.4 s)."""
    from harness.gpu.run import run_on_device
    from harness.gpu.setup import gpu_run_config, load_slice

    config = gpu_run_config(args.device, model=args.model, allocator="paged",
                            budget_slots=args.budget_slots)
    for s in args.slices:
        trace = load_slice(s.trace, start=s.start, count=min(s.count, WARM_UP_REQUESTS),
                           rate_scale=s.rate_scale,
                           max_model_len=QUICK_MAX_MODEL_LEN if args.quick else None)
        run_on_device(config, trace, decoder)
        free_device()


def run_slices(args, decoder, gpu: str, lines: list[str]) -> list[dict]:
    from harness.gpu.setup import gpu_run_config, load_slice

    runs_dir = Path(tempfile.mkdtemp(prefix="bench_fidelity_"))
    rows: list[dict] = []
    longest = 0.0
    for s in args.slices:
        trace = load_slice(s.trace, start=s.start, count=s.count, rate_scale=s.rate_scale,
                           max_model_len=QUICK_MAX_MODEL_LEN if args.quick else None)
        for allocator in args.allocators:
            if time.monotonic() + longest > args.deadline:
                print(f"skipped {s.name} / {allocator}: out of time", flush=True)
                continue
            started = time.monotonic()
            config = gpu_run_config(args.device, model=args.model, allocator=allocator,
                                    budget_slots=args.budget_slots)
            measured, simulated, batches = measured_and_simulated(args, config, trace, decoder)
            dirs = write_runs(runs_dir, measured, simulated, batches, s.name, allocator)
            rows.append(fidelity_row(s.name, allocator, *dirs))
            write_table(args.out / f"fidelity_{gpu}.csv", lines, rows)
            pack(runs_dir, args.out / f"fidelity_runs_{gpu}.tar.gz")
            longest = max(longest, time.monotonic() - started)
            print(f"{s.name:12s} {allocator:9s} " + " ".join(
                f"{k} {rows[-1][k]:+.3f}" for k in FIDELITY_COLUMNS[4:]) +
                f" ({time.monotonic() - started:.0f} s)", flush=True)
    return rows


def main() -> int:
    import torch

    from harness.gpu.executor import build_decoder
    from harness.gpu.profile import gpu_slug
    from harness.model.presets import model_preset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "fidelity-out")))
    parser.add_argument("--model", default="llama3-8b")
    parser.add_argument("--allocators", default=",".join(ALLOCATORS))
    parser.add_argument("--slices", default=",".join(s.name for s in SLICES),
                        help="which of the slices to replay, by name")
    parser.add_argument("--profile-dir", type=Path,
                        help="fit to the profile there instead of measuring one (default --out)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile-limit-s", type=float, default=150.0,
                        help="start no profile point after this many seconds")
    parser.add_argument("--time-limit-s", type=float, default=540.0,
                        help="start no run that the longest so far would carry past this")
    parser.add_argument("--budget-slots", type=int, help="KV budget instead of the memory sums")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--decode-balance", choices=sorted(DECODE_BALANCE), default="auto",
                        help="which decode steps run over work lists (kvharness gpu's)")
    parser.add_argument("--quick", action="store_true",
                        help="toy profile grid and 4-request slices (checks the script)")
    args = parser.parse_args()
    started = time.monotonic()
    args.deadline = started + args.time_limit_s
    args.device = torch.device(args.device)
    args.allocators = [a for a in args.allocators.split(",") if a]
    names = [n for n in args.slices.split(",") if n]
    known = {s.name for s in SLICES}
    if unknown := sorted(set(names) - known):
        parser.error(f"--slices: unknown {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    args.slices = [s for s in (QUICK_SLICES if args.quick else SLICES) if s.name in names]
    args.out.mkdir(parents=True, exist_ok=True)
    args.profile_dir = args.profile_dir or args.out
    gpu = gpu_slug(args.device)
    decoder = build_decoder(model_preset(args.model), device=args.device, dtype=args.dtype,
                            decode_balance=args.decode_balance)
    args.budget_slots = budget_slots(args)
    profile = profile_and_fit(args, decoder)
    command = "python benchmarks/bench_fidelity.py " + " ".join(sys.argv[1:])
    lines = header(args.device, command) + [
        f"# model: {args.model} {args.dtype} random weights; budget {args.budget_slots} KV slots",
        f"# fitted to: {profile} (synthetic steps; none of the runs below)",
        "# slices: " + "; ".join(f"{s.name} = {s.trace} [{s.start}, {s.start + s.count}) "
                                 f"x{s.rate_scale:g}" for s in args.slices),
        "# errors: simulated / measured - 1; step_err_* are quantiles of its absolute value "
        "over the measured steps, each priced by the fitted model",
    ]
    warm_up(args, decoder)
    rows = run_slices(args, decoder, gpu, lines)
    print(f"{len(rows)} runs in {time.monotonic() - started:.0f} s -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
