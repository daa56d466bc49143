"""The GPU executor's host preparation per step at a full batch, on any machine: the host work
is the same Python whatever the device (a CPU run takes the eager path where a GPU replays a
graph, and its forward is the tiny model's). Two workloads, all requests arriving at once:
"wave", 256 requests of 200 prompt tokens decoding 40 tokens each, so the steps are prefills of
many new requests, then decodes of 256 sequences; "chunks", 200 requests of 16 prompt tokens
decoding 40 tokens, then 80 of 800 prompt tokens sampling one, so after the first step each
prefill step holds about ten 800-token chunks beside 200 decode rows (a replay's slowest steps).
Prints the median and 99th percentile host preparation of the wave's decode-only and prefill
steps and of the chunks' mixed steps, per allocator, and writes host_prep_<device>.csv to --out:

    PYTHONPATH=. python benchmarks/probe_host_prep.py --out OUT
"""
from __future__ import annotations

import argparse
import cProfile
import dataclasses
import pstats
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench_gpu_decode import device_slug, header, write_csv
from harness.gpu.executor import build_decoder
from harness.gpu.run import run_on_device
from harness.model.config import AllocatorConfig, RunConfig, SchedulerConfig
from harness.model.presets import model_preset
from workloads.trace import make_trace

MAX_SEQS = 256
# Per workload: prompt and output tokens of each request.
WAVE = np.full(256, 200), np.full(256, 40)
CHUNKS = np.repeat([16, 800], [200, 80]), np.repeat([40, 1], [200, 80])
PARAMS = {"static": {}, "paged": {"block_size": 16}, "segmented": {},
          "hybrid": {"block_size": 16}}
COLUMNS = ("allocator", "kind", "steps", "host_prep_p50_ms", "host_prep_p99_ms")


def run(allocator: str, decoder, prompts: np.ndarray, outputs: np.ndarray) -> pd.DataFrame:
    """The step log of the requests, all arriving at t=0, through the allocator."""
    num = len(prompts)
    trace = make_trace(arrival_s=np.zeros(num), prompt_tokens=prompts, output_tokens=outputs,
                       n=np.ones(num, np.int64), prefix_hashes=None, failed=np.zeros(num, bool),
                       attrs={"name": "host-prep", "source": "probe", "format": "synthetic"})
    model = dataclasses.replace(model_preset("tiny"),
                                max_model_len=int(np.max(prompts + outputs)) + 1)
    config = RunConfig(model=model, allocator=AllocatorConfig.of(allocator, **PARAMS[allocator]),
                       scheduler=SchedulerConfig(max_num_seqs=MAX_SEQS,
                                                 max_num_batched_tokens=8192),
                       budget_slots_override=2 * num * (model.max_model_len + 15))
    _, executor = run_on_device(config, trace, decoder)
    return executor.step_log.frame()


def steps_by_kind(allocator: str, decoder) -> dict[str, pd.DataFrame]:
    """Both workloads through the allocator: the wave's decode-only and prefill steps, and the
    chunks' mixed steps (prefill chunks beside decode rows)."""
    wave, chunks = run(allocator, decoder, *WAVE), run(allocator, decoder, *CHUNKS)
    return {"decode": wave[wave.prefill_seqs == 0], "prefill": wave[wave.prefill_seqs > 0],
            "mixed": chunks[(chunks.prefill_seqs > 0) & (chunks.decode_seqs > 0)]}


def profile(allocator: str, decoder, path: Path) -> int:
    """The wave through the allocator (after one untimed run) under cProfile: the functions of
    the harness and numpy by own time, and the steps' host preparation, into path."""
    run(allocator, decoder, *WAVE)
    profiler = cProfile.Profile()
    profiler.enable()
    log = run(allocator, decoder, *WAVE)
    profiler.disable()
    prep = log[log.prefill_seqs == 0].host_prep_s.to_numpy() * 1e3
    with path.open("w") as f:
        f.write(f"{allocator}: {len(prep)} decode steps, host prep p50 {np.median(prep):.3f} "
                f"ms, p99 {np.percentile(prep, 99):.3f} ms (under cProfile)\n")
        stats = pstats.Stats(profiler, stream=f)
        stats.sort_stats("tottime").print_stats(r"harness|allocators|numpy|torch", 60)
        stats.sort_stats("cumulative").print_stats(r"harness", 60)
    print(path.read_text())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", metavar="ALLOCATOR",
                        help="instead: the wave's host functions through this allocator under "
                             "cProfile, by own time (prof_<device>.txt in --out)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    decoder = build_decoder(model_preset("tiny"), device=args.device, dtype="float32")
    if args.profile:
        return profile(args.profile, decoder, args.out / f"prof_{args.device}.txt")
    for allocator in PARAMS:
        for kind, steps in steps_by_kind(allocator, decoder).items():
            prep = steps.host_prep_s.to_numpy() * 1e3
            rows.append({"allocator": allocator, "kind": kind, "steps": len(steps),
                         "host_prep_p50_ms": np.median(prep),
                         "host_prep_p99_ms": np.percentile(prep, 99)})
            print(f"{allocator:9s} {kind:7s} {len(steps):3d} steps: host prep p50 "
                  f"{rows[-1]['host_prep_p50_ms']:.3f} ms, "
                  f"p99 {rows[-1]['host_prep_p99_ms']:.3f} ms", flush=True)
    command = "python benchmarks/probe_host_prep.py " + " ".join(sys.argv[1:])
    write_csv(args.out / f"host_prep_{device_slug(torch.device(args.device))}.csv",
              header(torch.device(args.device), command)
              + ["# setup: wave: 256 requests of 200 prompt tokens at t=0, 40 output tokens "
                 "each; chunks: 200 of 16 prompt and 40 output tokens, then 80 of 800 prompt "
                 "tokens and 1 output token; tiny model, float32; host preparation per step "
                 "(executor only)"],
              rows, COLUMNS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
