"""The GPU executor's host preparation per step at a full batch, on any machine: the host work
is the same Python whatever the device (a CPU run takes the eager path where a GPU replays a
graph, and its forward is the tiny model's). 256 requests of 200 prompt tokens arrive at once
and decode 40 tokens each, so the steps are prefills of many new requests, then decodes of 256
sequences. Prints the median host preparation of decode-only and of prefill steps, per
allocator, and writes host_prep_<device>.csv to --out:

    PYTHONPATH=. python benchmarks/probe_host_prep.py --out OUT
"""
from __future__ import annotations

import argparse
import dataclasses
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

REQUESTS, PROMPT, OUTPUT = 256, 200, 40
PARAMS = {"static": {}, "paged": {"block_size": 16}, "segmented": {},
          "hybrid": {"block_size": 16}}
COLUMNS = ("allocator", "kind", "steps", "host_prep_p50_ms", "host_prep_p99_ms")
MODEL = dataclasses.replace(model_preset("tiny"), max_model_len=PROMPT + OUTPUT + 1)


def run(allocator: str, decoder) -> pd.DataFrame:
    trace = make_trace(arrival_s=np.zeros(REQUESTS), prompt_tokens=np.full(REQUESTS, PROMPT),
                       output_tokens=np.full(REQUESTS, OUTPUT), n=np.ones(REQUESTS, np.int64),
                       prefix_hashes=None, failed=np.zeros(REQUESTS, bool),
                       attrs={"name": "host-prep", "source": "probe", "format": "synthetic"})
    config = RunConfig(model=MODEL, allocator=AllocatorConfig.of(allocator, **PARAMS[allocator]),
                       scheduler=SchedulerConfig(max_num_seqs=REQUESTS,
                                                 max_num_batched_tokens=8192),
                       budget_slots_override=2 * REQUESTS * (PROMPT + OUTPUT + 16))
    _, executor = run_on_device(config, trace, decoder)
    return executor.step_log.frame()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    decoder = build_decoder(MODEL, device=args.device, dtype="float32")
    for allocator in PARAMS:
        log = run(allocator, decoder)
        for kind, steps in (("decode", log[log.prefill_seqs == 0]),
                            ("prefill", log[log.prefill_seqs > 0])):
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
              + [f"# setup: {REQUESTS} requests of {PROMPT} prompt tokens at t=0, {OUTPUT} output "
                 "tokens each; tiny model, float32; host preparation per step (executor only)"],
              rows, COLUMNS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
