"""`kvharness profile --model M --out DIR`: measure the GPU executor's step time over a grid of
step shapes and write DIR/profile_<model>_<gpu>.csv, the table the fitted cost model learns from.

    kvharness profile --model llama3-8b --out benchmarks/results

Commit the file under benchmarks/results/ and every simulation of that model on that GPU family
is priced by the fitted model (run.json's executor_details["cost_model"] says so). Measure it
again whenever the GPU executor changes. --quick measures a handful of small points (a test of
the code path, not a profile to fit). --tp N profiles the decoder split over N GPUs (one process
each, as `kvharness gpu --tp N` runs it) into profile_<model>_<gpu>_tp<N>.csv, which prices the
simulations of that model at that width.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.cli.argtypes import non_negative_int, positive_float, positive_int
from harness.cli.gpu import add_decode_balance_argument


def _block_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of block sizes: {text!r}")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model preset (tiny, llama3-8b, ...)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the profile CSV")
    parser.add_argument("--gpu-name", default="auto",
                        help="the GPU's name in the file name (default: from the device)")
    parser.add_argument("--gpu", help="GPU preset for the KV budget; default: from the device")
    parser.add_argument("--block-sizes", type=_block_sizes, default=(16,),
                        help="comma-separated paged block sizes (default 16)")
    parser.add_argument("--budget-slots", type=positive_int,
                        help="KV budget in slots instead of the memory arithmetic")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed steps per point")
    parser.add_argument("--warmup", type=non_negative_int, default=1,
                        help="untimed steps per point first")
    parser.add_argument("--time-limit-s", type=positive_float,
                        help="start no point after this many seconds (the file holds those done)")
    parser.add_argument("--quick", action="store_true", help="a few small points only")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--device", help="torch device; default cuda when available, else cpu")
    parser.add_argument("--tp", type=positive_int, default=1, metavar="N",
                        help="tensor-parallel ranks: N processes, one GPU each (gloo on a CPU)")
    add_decode_balance_argument(parser)


def main(args: argparse.Namespace) -> int:
    import torch

    from harness.gpu.attention import balance_skew
    from harness.gpu.executor import build_decoder
    from harness.gpu.profile import (ProfileSettings, gpu_slug, measure_profile,
                                     profile_command, profile_header, write_profile)
    from harness.gpu.profile_grid import QUICK_GRID, GridSpec
    from harness.gpu.setup import gpu_run_config
    from harness.gpu.tp_run import profile_tensor_parallel
    from harness.model.fitted import tp_suffix

    started = time.monotonic()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = gpu_run_config(device, model=args.model, allocator="paged", gpu=args.gpu,
                            budget_slots=args.budget_slots, tp=args.tp)
    grid = QUICK_GRID if args.quick else GridSpec(
        max_num_seqs=config.scheduler.max_num_seqs,
        max_num_batched_tokens=config.scheduler.max_num_batched_tokens)
    settings = ProfileSettings(
        grid=grid, block_sizes=args.block_sizes, repeats=args.repeats, warmup=args.warmup,
        deadline=started + args.time_limit_s if args.time_limit_s else None)
    if args.tp > 1:
        frame = profile_tensor_parallel(config, settings, device_type=device.type,
                                        dtype=args.dtype, decode_balance=args.decode_balance)
    else:
        decoder = build_decoder(config.model, device=device, dtype=args.dtype, seed=config.seed,
                                decode_balance=args.decode_balance)
        frame = measure_profile(config, decoder, settings,
                                log=lambda line: print(line, flush=True))
    gpu = gpu_slug(device) if args.gpu_name == "auto" else args.gpu_name
    path = write_profile(args.out / f"profile_{args.model}_{gpu}{tp_suffix(args.tp)}.csv",
                         profile_header(device, config, profile_command(), settings,
                                        balance_skew(device, args.decode_balance)), frame)
    print(f"{len(frame)} points in {time.monotonic() - started:.0f} s -> {path}")
    return 0
