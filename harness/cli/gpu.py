"""`kvharness gpu --trace T --allocator A --model M`: replay a trace on the device, measured.

The same engine, scheduler and allocator as `kvharness simulate`, with the GpuExecutor: a
Llama-style decoder with seeded random weights at the model's real shape runs every step, and
the clock advances by the step's measured time. Writes the same steps.parquet, requests.parquet
and run.json (executor "gpu", the device's name), steps.parquet with a kv_allocated_bytes column.
With --kv-dtype fp8 the KV pool is float8 e4m3, quantized on write with per-layer, per-head
scales calibrated once before the first step (harness.gpu.calibration).
With --tp N the decoder is split over N processes (harness.gpu.tp_run); the engine runs once.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from allocators import DEFAULT_ALLOCATOR
from harness.cli.argtypes import (allocator_name, int_at_least, non_negative_int, positive_float,
                                  positive_int)
from harness.cli.params import add_param_arguments, cli_params
from harness.cli.simulate import (add_cpu_cache_argument, add_decoding_arguments,
                                  add_kv_dtype_argument, add_window_arguments, cpu_cache_bytes,
                                  host_tier_line, with_window)
from harness.cli.trace import add_trace_load_arguments, trace_load_options
from harness.model.config import DECODE_BALANCE


def _device(text: str):
    """--device: a torch device string, checked when parsed rather than at the first step."""
    import torch

    try:
        return torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}") from None


def add_decode_balance_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--decode-balance", choices=sorted(DECODE_BALANCE), default="auto",
                        help="which decode steps run over work lists built per step, which "
                        "share the keys out evenly whatever the mix of context lengths "
                        "(kernels/balanced_decode.py), instead of one split count per launch: "
                        "auto those whose longest context is over three times the mean "
                        "(default), on every one, off none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", default="azure-conv", help="trace file or bundled name")
    add_trace_load_arguments(parser)
    parser.add_argument("--allocator", type=allocator_name, default=DEFAULT_ALLOCATOR,
                        help=f"one registered allocator (default {DEFAULT_ALLOCATOR})")
    add_param_arguments(parser)
    parser.add_argument("--model", default="llama3-8b", help="model preset (tiny, llama3.2-1b, "
                        "llama3-8b, ...)")
    add_window_arguments(parser)
    parser.add_argument("--requests", type=positive_int, metavar="N",
                        help="the first N requests only")
    parser.add_argument("--start", type=non_negative_int, default=0,
                        help="skip this many requests first")
    parser.add_argument("--rate-scale", type=positive_float, default=1.0,
                        help="replay arrivals this many times faster")
    # workloads.cap_lengths keeps one prompt token and one output token.
    parser.add_argument("--max-model-len", type=int_at_least(2),
                        help="cap prompt + output at this many tokens (workloads.cap_lengths)")
    parser.add_argument("--config", type=Path, help="base RunConfig TOML (model/allocator flags "
                        "override it)")
    parser.add_argument("--gpu", help="GPU preset for the KV budget; default: from the device")
    parser.add_argument("--budget-slots", type=positive_int,
                        help="KV budget in slots instead of the memory arithmetic "
                        "(default on a CPU: 65536)")
    parser.add_argument("--preemption", choices=("recompute", "swap"))
    add_cpu_cache_argument(parser)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    add_kv_dtype_argument(parser)
    parser.add_argument("--device", type=_device,
                        help="torch device; default cuda when available, else cpu")
    parser.add_argument("--seed", type=non_negative_int,
                        help="weights and prompt tokens seed (config's)")
    parser.add_argument("--tp", type=positive_int, metavar="N",
                        help="tensor-parallel ranks: N processes, one GPU each (gloo on a CPU); "
                        "default the config's (1)")
    parser.add_argument("--out", type=Path, help="run directory (default runs/gpu-<allocator>)")
    add_decoding_arguments(parser)
    add_decode_balance_argument(parser)
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    import torch

    from harness.engine.recorder import write_run
    from harness.gpu.executor import build_decoder
    from harness.gpu.run import run_on_device
    from harness.gpu.setup import gpu_run_config, load_slice

    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    params = cli_params([args.allocator], args.block_size, args.param)[args.allocator]
    decoding = {"n": args.n, "beam_width": args.beam_width, "spec_tokens": args.spec_tokens,
                "spec_accept": args.spec_accept}
    trace = load_slice(args.trace, start=args.start, count=args.requests,
                       rate_scale=args.rate_scale, max_model_len=args.max_model_len,
                       decoding=decoding, **trace_load_options(args))
    config = gpu_run_config(
        device, model=args.model, allocator=args.allocator, params=params, base=args.config,
        gpu=args.gpu, budget_slots=args.budget_slots, preemption=args.preemption,
        seed=args.seed, tp=args.tp, kv_dtype=args.kv_dtype,
    )
    if args.cpu_cache_gib is not None:
        config = dataclasses.replace(config, cpu_cache_bytes=cpu_cache_bytes(args.cpu_cache_gib))
    config = dataclasses.replace(config, model=with_window(config.model, args))
    if config.tp > 1:
        from harness.gpu.tp_run import run_tensor_parallel

        ran = run_tensor_parallel(config, trace, device_type=device.type, dtype=args.dtype,
                                  decode_balance=args.decode_balance)
        result, name, details = ran.result, f"{ran.device} x{config.tp}", ran.details
    else:
        decoder = build_decoder(config.model, device=device, dtype=args.dtype, seed=config.seed,
                                decode_balance=args.decode_balance)
        result, executor = run_on_device(config, trace, decoder, progress=not args.no_progress)
        name, details = executor.device, executor.details
    out = write_run(result, args.out or Path("runs") / f"gpu-{args.allocator}")
    s = result.summary
    print(
        f"{name}: {s['completed']}/{s['requests']} completed, "
        f"{s['output_tokens']} output tokens in {details['device_s']:.2f} s of steps "
        f"({s['output_tokens'] / max(details['device_s'], 1e-9):.0f} tok/s), "
        f"peak KV {s['peak_kv_allocated_bytes'] / 2**30:.2f} GiB, utilization "
        f"{s['utilization_mean']:.3f} -> {out}"
    )
    if "prefix_hit_rate_host" in s:
        print(f"{name}: {host_tier_line(s)}")
    return 0

