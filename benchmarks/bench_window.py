"""GPU benchmark of the sliding window: decode attention with and without it, and the GPU
executor on mistral-7b shapes with and without it.

1. Decode attention at long context, mistral-7b heads (32 query, 8 KV, head_dim 128), bf16,
   block 16, shuffled block tables. Full attention: paged_decode, and SDPA on a contiguous
   cache (the non-paged ceiling). The 4,096-token window: paged_decode with the blocks wholly
   before the window let go (their table entries -1, as the allocators leave them), and SDPA
   on a contiguous copy of the window's keys. Each row gives the copy floor of the KV it reads
   (bytes / the measured device-to-device copy bandwidth, read + write, as
   bench_paged_decode.py counts it). Every timed output is checked against kernels.reference.
   -> window_decode_<device>.csv
2. The GPU executor (CUDA graphs on) on mistral-7b shapes with seeded random weights, paged
   allocator, a slice of Mooncake cut to the model's 32,768-token context, a KV budget small
   enough that full attention presses it: with the window, then with full attention, each also
   priced by the cost model. -> window_gpu_<device>.csv (rewritten after each run, so a run cut
   off by a time limit keeps what finished)

    PYTHONPATH=. python benchmarks/bench_window.py --out "$OUT"
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import gc
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

from bench_paged_decode import copy_bandwidth_gbs, device_slug, make_case, time_us
from kernels.paged_decode import paged_decode
from kernels.reference import gather_kv, reference_decode
from kernels.segments import segment_table

BLOCK_SIZE = 16
CHECKED_SEQS = 4
DECODE_COLUMNS = ("batch", "context", "window", "impl", "median_us", "kv_bytes_read",
                  "bandwidth_gbs", "floor_us", "of_floor", "speedup_vs_full", "max_abs_err",
                  "rel_err")
GPU_COLUMNS = ("attention", "allocator", "budget_slots", "requests", "completed",
               "output_tokens", "steps", "measured_tok_s", "decode_step_tok_s",
               "peak_kv_allocated_bytes", "peak_running", "mean_step_ms_measured",
               "mean_step_ms_simulated", "ttft_p50_s", "preemptions", "wall_s")


def header(command: str) -> list[str]:
    return [f"# device: {torch.cuda.get_device_name()}", f"# torch: {torch.__version__}",
            f"# triton: {triton.__version__}", f"# date: {datetime.date.today().isoformat()}",
            f"# command: {command}"]


def write_csv(path: Path, command: str, rows: list[dict], columns) -> None:
    with open(path, "w", newline="") as fh:
        fh.write("\n".join(header(command)) + "\n")
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]
                             for k in columns})


def decode_rows(batch: int, context: int, window: int, copy_gbs: float) -> list[dict]:
    """SDPA and paged_decode, full attention and windowed, on one pool."""
    case = make_case(batch, context, seed=batch * 7919 + context)
    k_segs, v_segs, bps = case.segments(BLOCK_SIZE)
    table = segment_table(k_segs, v_segs)
    tables = case.block_tables(BLOCK_SIZE, "shuffled", seed=context)
    lens = case.context_lens()
    first = max(0, context - window)  # the first key the query at context - 1 reads
    released = tables.clone()
    released[:, : first // BLOCK_SIZE] = -1
    # SDPA reads the same sequences in token order: the pool gathered through the tables.
    k_full = gather_kv(k_segs, tables, lens, bps).transpose(1, 2).contiguous()
    v_full = gather_kv(v_segs, tables, lens, bps).transpose(1, 2).contiguous()
    k_win, v_win = k_full[:, :, first:].contiguous(), v_full[:, :, first:].contiguous()
    shape = (batch, context, k_full.shape[1], k_full.shape[3])
    q = case.q.unsqueeze(2)
    calls = {
        ("sdpa", None): lambda: F.scaled_dot_product_attention(q, k_full, v_full,
                                                               enable_gqa=True).squeeze(2),
        ("paged", None): lambda: paged_decode(case.q, None, None, tables, lens, bps,
                                              table=table),
        ("sdpa", window): lambda: F.scaled_dot_product_attention(q, k_win, v_win,
                                                                 enable_gqa=True).squeeze(2),
        ("paged", window): lambda: paged_decode(case.q, None, None, released, lens, bps,
                                                table=table, window=window),
    }
    n = min(batch, CHECKED_SEQS)
    refs = {w: reference_decode(case.q[:n], k_segs, v_segs, released[:n] if w else tables[:n],
                                lens[:n], bps, window=w) for w in (None, window)}
    rows, times = [], {}
    for (impl, w), call in calls.items():
        diff = call()[:n].float() - refs[w]
        times[impl, w] = us = time_us(call)
        keys = context if w is None else min(context, w)
        kv_bytes = 2 * batch * keys * shape[2] * shape[3] * case.pool_k.element_size()
        floor = kv_bytes / copy_gbs / 1e3
        rows.append(dict(batch=batch, context=context, window=w or "", impl=impl,
                         median_us=us, kv_bytes_read=kv_bytes, bandwidth_gbs=kv_bytes / us / 1e3,
                         floor_us=floor, of_floor=floor / us,
                         speedup_vs_full=times[impl, None] / us,
                         max_abs_err=diff.abs().max().item(),
                         rel_err=(diff.norm() / refs[w].norm()).item()))
        print(f"{impl:5s} B={batch:3d} T={context:6d} window={w or '-':>5} {us:9.1f} us "
              f"{kv_bytes / us / 1e3:7.0f} GB/s floor {floor:8.1f} us "
              f"rel {rows[-1]['rel_err']:.1e}", flush=True)
    return rows


def executor_row(attention: str, window: int | None, args, trace, weights, device) -> dict:
    """One measured run of the slice with the GpuExecutor, and the cost model's price of it."""
    from harness.engine.loop import simulate
    from harness.gpu.attention import default_backend
    from harness.gpu.model import Decoder, DecoderConfig
    from harness.gpu.run import run_on_device
    from harness.gpu.setup import gpu_run_config

    config = gpu_run_config(device, model=args.model, allocator="paged",
                            budget_slots=args.budget_slots)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, sliding_window=window),
        scheduler=dataclasses.replace(config.scheduler, max_num_seqs=args.max_num_seqs))
    decoder = Decoder(DecoderConfig.from_model_spec(config.model), weights,
                      default_backend(device))
    started = time.perf_counter()
    result, executor = run_on_device(config, trace, decoder)
    wall = time.perf_counter() - started
    simulated = simulate(config, trace)
    s, details = result.summary, executor.details
    decode = result.steps[result.steps["prefill_tokens"] == 0]
    return dict(
        attention=attention, allocator="paged", budget_slots=args.budget_slots,
        requests=s["requests"], completed=s["completed"], output_tokens=s["output_tokens"],
        steps=details["steps"], measured_tok_s=s["output_tokens"] / details["device_s"],
        decode_step_tok_s=decode["decode_tokens"].sum() / (decode["step_ms"].sum() / 1e3),
        peak_kv_allocated_bytes=s["peak_kv_allocated_bytes"], peak_running=s["peak_running"],
        mean_step_ms_measured=s["mean_step_ms"],
        mean_step_ms_simulated=simulated.summary["mean_step_ms"], ttft_p50_s=s["ttft_p50_s"],
        preemptions=s["preemptions"], wall_s=wall)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    parser.add_argument("--window", type=int, default=4096)
    parser.add_argument("--batches", type=ints, default=[1, 8, 32])
    parser.add_argument("--contexts", type=ints, default=[8192, 32768])
    parser.add_argument("--model", default="mistral-7b")
    parser.add_argument("--trace", default="mooncake-conv")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--rate-scale", type=float, default=4.0)
    parser.add_argument("--budget-slots", type=int, default=98304,
                        help="KV slots: 12 GiB of mistral-7b KV, which full attention presses")
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--skip-executor", action="store_true")
    args = parser.parse_args()
    command = "PYTHONPATH=. python " + " ".join(sys.argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = device_slug()
    copy_gbs = copy_bandwidth_gbs()
    print(f"copy bandwidth {copy_gbs:.0f} GB/s on {torch.cuda.get_device_name()}", flush=True)
    rows = []
    for batch in args.batches:
        for context in args.contexts:
            rows += decode_rows(batch, context, args.window, copy_gbs)
            write_csv(out / f"window_decode_{slug}.csv", command, rows, DECODE_COLUMNS)
            gc.collect()
            torch.cuda.empty_cache()
    ok = all(row["rel_err"] < 1e-2 for row in rows)
    if args.skip_executor:
        return 0 if ok else 1

    from harness.gpu.executor import build_decoder
    from harness.gpu.setup import load_slice
    from harness.model.presets import model_preset

    device = torch.device("cuda")
    model = model_preset(args.model)
    trace = load_slice(args.trace, count=args.requests, rate_scale=args.rate_scale,
                       max_model_len=model.max_model_len)
    weights = build_decoder(model, device=device, dtype="bfloat16", seed=0).weights
    runs = []
    for attention, window in ((f"window-{args.window}", args.window), ("full", None)):
        runs.append(executor_row(attention, window, args, trace, weights, device))
        print(runs[-1], flush=True)
        write_csv(out / f"window_gpu_{slug}.csv", command, runs, GPU_COLUMNS)
        gc.collect()
        torch.cuda.empty_cache()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
