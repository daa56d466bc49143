"""Synthetic run directories in the results contract's schema (steps.parquet, requests.parquet,
run.json), so the report builders are tested without the engine."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports.load import AllocatorFacts
from reports.schema import REQUEST_COLUMNS, STEP_COLUMNS, write_table

# Typical live/backed share and the waste it leaves, per allocator (reserved, internal, external,
# cached): static reserves, paged wastes block tails, segmented backs memory on demand.
PROFILES = {
    "static": (0.30, 0.55, 0.08, 0.04, 0.0),
    "paged": (0.80, 0.0, 0.02, 0.0, 0.05),
    "segmented": (0.93, 0.0, 0.0, 0.0, 0.03),
    "hybrid": (0.88, 0.0, 0.02, 0.0, 0.04),
}
BUDGET_SLOTS = 100_000
BYTES_PER_TOKEN = 131_072


def _requests(rng: np.random.Generator, num: int, status: str, slow: float,
              rate_scale: float) -> pd.DataFrame:
    # Arrivals are the slice's, whatever the run's seed: runs of one slice share its rate.
    arrival = np.cumsum(np.random.default_rng(num).exponential(0.5, num)) / rate_scale
    if num:
        arrival -= arrival[0]
    prompt = rng.integers(100, 2000, num)
    output = rng.integers(10, 400, num)
    done = status == "completed"
    ttft = np.where(done, rng.gamma(2.0, 0.05 * slow, num), np.nan)
    tpot = np.where(done, rng.gamma(5.0, 0.004 * slow, num), np.nan)
    e2e = ttft + tpot * output
    return pd.DataFrame({
        "request_id": np.arange(num), "arrival_s": arrival, "prompt_tokens": prompt,
        "output_tokens": output, "n": np.ones(num, dtype=int), "status": [status] * num,
        "reason": ["" if done else "prompt exceeds the KV budget"] * num,
        "admit_s": np.where(done, arrival, np.nan), "first_token_s": arrival + ttft,
        "finish_s": arrival + e2e, "ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e,
        "preemptions": np.zeros(num, dtype=int), "prefix_hit_tokens": np.zeros(num, dtype=int),
    })[list(REQUEST_COLUMNS)]


def _steps(rng: np.random.Generator, num_steps: int, profile: tuple, grows: bool
           ) -> pd.DataFrame:
    live_share, reserved, internal, external, cached = profile
    step_ms = rng.uniform(10, 30, num_steps)
    backed = (np.linspace(0.2, 1.0, num_steps) * BUDGET_SLOTS if grows
              else np.full(num_steps, BUDGET_SLOTS)).astype(int)
    share = np.clip(live_share + rng.normal(0, 0.02, num_steps), 0, 1 - reserved - internal)
    live = (share * backed).astype(int)
    reserved_slots = (reserved * backed).astype(int)
    internal_slots = (internal * backed).astype(int)
    cached_slots = (cached * backed).astype(int)
    free = backed - live - reserved_slots - internal_slots - cached_slots
    largest = (free * (1 - external / max(1e-9, 1 - live_share - reserved))).astype(int)
    running = rng.integers(1, 40, num_steps)
    return pd.DataFrame({
        "step": np.arange(num_steps), "time_s": np.cumsum(step_ms) / 1000, "step_ms": step_ms,
        "running": running, "waiting": rng.integers(0, 10, num_steps),
        "swapped": np.zeros(num_steps, dtype=int), "batch_tokens": running,
        "prefill_tokens": np.zeros(num_steps, dtype=int), "decode_tokens": running,
        "preempted": np.zeros(num_steps, dtype=int),
        "budget": BUDGET_SLOTS, "backed": backed, "live": live, "logical": live,
        "reserved": reserved_slots, "internal": internal_slots, "cached": cached_slots,
        "free": free, "largest_free_run": largest, "stale": np.zeros(num_steps, dtype=int),
        "utilization": live / backed,
        "external_fragmentation": np.where(free > 0, 1 - largest / np.maximum(free, 1), 0.0),
    })[list(STEP_COLUMNS)]


def _summary(steps: pd.DataFrame, requests: pd.DataFrame) -> dict:
    if steps.empty:
        shares = dict.fromkeys(("utilization_mean", "waste_reserved", "waste_internal",
                                "waste_external", "waste_cached", "waste_stale", "waste_free"))
        running = {"peak_running": 0, "mean_running": None}
    else:
        w = steps["step_ms"].to_numpy()
        backed = steps["backed"].to_numpy()

        def mean(values):
            return float(np.average(values / backed, weights=w))

        shares = {"utilization_mean": mean(steps["live"]),
                  "waste_reserved": mean(steps["reserved"]),
                  "waste_internal": mean(steps["internal"]),
                  "waste_external": mean(steps["free"] * steps["external_fragmentation"]),
                  "waste_cached": mean(steps["cached"]),
                  "waste_stale": mean(steps["stale"]),
                  "waste_free": mean(steps["free"])}
        running = {"peak_running": int(steps["running"].max()),
                   "mean_running": float(np.average(steps["running"], weights=w))}
    done = requests[requests["status"] == "completed"]
    sim_time = float(steps["time_s"].iloc[-1]) if not steps.empty else 0.0
    out_tokens = int(done["output_tokens"].sum())

    def q(column, p):
        values = done[column].dropna()
        return float(values.quantile(p)) if len(values) else None

    return {
        "requests": len(requests), "completed": len(done),
        "rejected": int((requests["status"] == "rejected").sum()),
        "queued_at_end": 0, "running_at_end": 0, "budget_slots": BUDGET_SLOTS,
        "bytes_per_token": BYTES_PER_TOKEN, **shares,
        "utilization_p50": shares["utilization_mean"],
        "utilization_p99": shares["utilization_mean"],
        **running, "peak_backed_bytes": BUDGET_SLOTS * BYTES_PER_TOKEN,
        "throughput_tok_s": out_tokens / sim_time if sim_time else None,
        "output_tokens": out_tokens, "prefill_tokens": int(done["prompt_tokens"].sum()),
        "prefix_hit_tokens": 0,
        **{f"{m}_p{p}_s": q(f"{m}_s", p / 100) for m in ("ttft", "tpot", "e2e") for p in (50, 99)},
        "preemptions": 0, "sim_time_s": sim_time,
        "mean_step_ms": float(steps["step_ms"].mean()) if not steps.empty else None,
    }


def write_run(path: Path, *, allocator: str = "paged", trace: str = "azure-conv",
              num_requests: int = 60, num_steps: int = 300, block_size: int | None = None,
              status: str = "completed", seed: int = 0, rate_scale: float = 1.0) -> Path:
    """Write a synthetic run directory and return its path; rate_scale replays its slice of
    arrivals that many times faster."""
    rng = np.random.default_rng(seed)
    profile = list(PROFILES[allocator])
    if block_size is not None:  # bigger blocks: longer unused tails
        profile[0] -= 0.002 * block_size
        profile[2] += 0.002 * block_size
    slow = {"static": 3.0, "paged": 1.0, "segmented": 1.1, "hybrid": 1.05}[allocator]
    requests = _requests(rng, num_requests, status, slow, rate_scale)
    steps = _steps(rng, num_steps if num_requests and status == "completed" else 0,
                   tuple(profile), grows=allocator in ("segmented", "hybrid"))
    params = [["block_size", block_size]] if block_size is not None else []
    meta = {
        "config": {"model": {"name": "llama3-8b", "num_layers": 32, "num_kv_heads": 8,
                             "head_dim": 128, "dtype_bytes": 2},
                   "gpu": {"name": "h100-80gb", "memory_bytes": 80 * 2**30}, "tp": 1,
                   "gpu_memory_utilization": 0.9,
                   "allocator": {"name": allocator, "params": params},
                   "scheduler": {"max_num_seqs": 256, "max_num_batched_tokens": 8192}},
        "trace": {"name": trace, "source": f"bundled:{trace}", "rows": num_requests},
        "executor": "costmodel", "device": None,
        "versions": {"kvharness": "0.1.0", "python": "3.11"}, "seed": seed,
        "summary": _summary(steps, requests),
    }
    path.mkdir(parents=True, exist_ok=True)
    write_table(steps, path / "steps.parquet")
    write_table(requests, path / "requests.parquet")
    (path / "run.json").write_text(json.dumps(meta, indent=1))
    return path


KERNEL_CSV = """# device: NVIDIA H100 80GB HBM3
# torch: 2.5.0
# triton: 3.1.0
# date: 2025-01-15
batch,context,block_size,layout,impl,median_us,kv_bytes,bandwidth_gbs,copy_bandwidth_gbs,max_abs_err
"""


def write_kernel_csv(results_dir: Path) -> Path:
    rows = []
    for batch, context in ((8, 4096), (32, 16384)):
        rows.append(f"{batch},{context},0,contiguous,sdpa,100,1000000,2500,3000,0.0")
        for block_size in (1, 8, 16, 32, 64, 128):
            for layout, penalty in (("contiguous", 0.0), ("shuffled", 0.1)):
                bandwidth = 2500 * (1 - 0.5 / block_size ** 0.5 - penalty)
                rows.append(f"{batch},{context},{block_size},{layout},paged,120,1000000,"
                            f"{bandwidth:.1f},3000,0.001")
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "paged_decode_h100.csv"
    path.write_text(KERNEL_CSV + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def four_allocators(tmp_path: Path) -> list[Path]:
    """One trace through the four allocators."""
    return [write_run(tmp_path / name, allocator=name, seed=i)
            for i, name in enumerate(PROFILES)]


@pytest.fixture
def make_run():
    """The synthetic run writer: make_run(path, allocator=..., trace=..., ...) -> path."""
    return write_run


@pytest.fixture
def kernel_csv(tmp_path: Path) -> Path:
    """A results directory holding one synthetic paged-decode kernel CSV; returns the file."""
    return write_kernel_csv(tmp_path / "results")


@pytest.fixture
def facts() -> AllocatorFacts:
    """What the CLI hands the reports from the allocator specs, written out as plain data."""
    return AllocatorFacts(order=("static", "paged", "segmented", "hybrid"),
                          labels={"block_size": "bs", "segment_tokens": "seg"},
                          reservations={"static": "max_model_len"},
                          oracles={"static": "oracle"})
