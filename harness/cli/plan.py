"""`kvharness plan`: KV budget, the longest context that fits, and concurrency per allocator.

    kvharness plan --model llama3-8b --gpu h100-80gb --context 8192
    kvharness plan --model llama3-8b --gpu h200-141gb --tp 8 --max-model-len 10000000
    kvharness plan --model llama3.1-8b --gpu h100-80gb --context 131072 --kv-dtype fp8
"""
from __future__ import annotations

import argparse
import json

from harness.cli.argtypes import fraction, positive_int
from harness.cli.params import add_param_arguments, cli_params
from harness.cli.simulate import add_kv_dtype_argument
from reports.schema import DEFAULT_KV_DTYPE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="llama3-8b", help="model preset")
    parser.add_argument("--gpu", default="h100-80gb", help="GPU preset")
    parser.add_argument("--tp", type=positive_int, default=1, help="tensor-parallel degree")
    parser.add_argument("--context", type=positive_int, default=8192, help="tokens per sequence")
    parser.add_argument("--max-model-len", type=positive_int,
                        help="configured maximum length (what an allocator that reserves a "
                        "fixed length per request preallocates)")
    parser.add_argument("--gpu-memory-utilization", type=fraction, default=0.9,
                        help="in (0, 1] (default 0.9)")
    add_param_arguments(parser)
    parser.add_argument("--max-num-batched-tokens", type=positive_int, default=8192,
                        help="sizes the activation reserve, as in vLLM's profile run")
    add_kv_dtype_argument(parser, default=DEFAULT_KV_DTYPE)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def main(args: argparse.Namespace) -> int:
    from harness.model.config import RunConfig, SchedulerConfig
    from allocators import SPECS
    from harness.model.planner import plan_capacity
    from harness.model.presets import gpu_preset, model_preset

    config = RunConfig(
        model=model_preset(args.model),
        gpu=gpu_preset(args.gpu),
        tp=args.tp,
        gpu_memory_utilization=args.gpu_memory_utilization,
        scheduler=SchedulerConfig(max_num_batched_tokens=args.max_num_batched_tokens),
        kv_dtype=args.kv_dtype,
    )
    params = cli_params(tuple(SPECS), args.block_size, args.param)
    plan = plan_capacity(
        config, context=args.context, max_model_len=args.max_model_len, params=params
    )
    print(json.dumps(plan_dict(plan), indent=2) if args.json else format_plan(plan))
    return 0


def plan_dict(plan) -> dict:
    b = plan.budget
    return {
        "model": plan.config.model.name,
        "gpu": plan.config.gpu.name,
        "tp": plan.config.tp,
        "kv_dtype": plan.config.kv_dtype,
        "bytes_per_token": b.bytes_per_token,
        "weight_bytes": b.weight_bytes,
        "activation_bytes": b.activation_bytes,
        "kv_bytes": b.kv_bytes,
        "kv_scale_bytes": b.scale_bytes,
        "kv_tokens": b.slots,
        "context": plan.context,
        "max_model_len": plan.max_model_len,
        "allocators": [vars(cap) for cap in plan.allocators],
        "warnings": list(plan.warnings),
    }


def format_plan(plan) -> str:
    from harness.model.presets import GIB

    b, c = plan.budget, plan.config
    lines = [
        f"{c.model.name} on {c.gpu.name} x tp {c.tp} "
        f"(gpu_memory_utilization {c.gpu_memory_utilization:g}), per GPU:",
        f"  memory {c.gpu.memory_bytes / GIB:,.1f} GiB, weights {b.weight_bytes / GIB:,.2f} GiB, "
        f"activations {b.activation_bytes / GIB:,.2f} GiB",
        f"  KV cache ({c.kv_dtype}) {b.kv_bytes / GIB:,.2f} GiB = {b.slots:,} tokens at "
        f"{b.bytes_per_token:,} bytes per token" + _scales_note(b),
        "",
        f"at context {plan.context:,}" + _max_len_note(plan),
        f"  {'allocator':<10} {'tokens/seq':>12} {'max concurrent':>15} {'longest context':>16}",
    ]
    for cap in plan.allocators:
        lines.append(
            f"  {cap.name:<10} {cap.tokens_per_seq:>12,} {cap.max_concurrency:>15,} "
            f"{cap.largest_context:>16,}"
        )
    lines.extend(f"\nWARNING: {w}" for w in plan.warnings)
    return "\n".join(lines)


def _max_len_note(plan) -> str:
    from allocators import SPECS

    names = [spec.name for spec in SPECS.values() if spec.max_len_param]
    if plan.max_model_len is None or not names:
        return ""
    return f" ({' and '.join(names)} reserves max_model_len {plan.max_model_len:,})"


def _scales_note(budget) -> str:
    return f", plus {budget.scale_bytes:,} bytes of scales" if budget.scale_bytes else ""
