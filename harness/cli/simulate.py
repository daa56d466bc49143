"""`kvharness simulate`: replay one trace through one allocator and write the run directory.

    kvharness simulate --trace azure-conv --allocator paged --block-size 16 \
        --model llama3-8b --gpu h100-80gb --out runs/azure-paged

Flags override the values of --config FILE.toml; everything left unset keeps the defaults of
harness.model.config.RunConfig.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from harness.cli.argtypes import (allocator_names, fraction, non_negative_float, non_negative_int,
                                  positive_float, positive_int, probability)
from harness.cli.params import add_param_arguments, cli_params
from harness.cli.trace import add_trace_load_arguments, trace_load_options
from harness.model.config import ConfigError

GIB = 1 << 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--trace", help="trace file or bundled name (azure-conv)")
    source.add_argument("--from", dest="from_run", type=Path, metavar="RUN_JSON",
                        help="replay the run a run.json describes (its config and trace spec; "
                        "flags given too override them)")
    parser.add_argument("--out", required=True, help="run directory to write")
    parser.add_argument("--config", help="a RunConfig as TOML (YAML with PyYAML)")
    add_trace_load_arguments(parser)
    parser.add_argument("--requests", type=positive_int, help="replay only the first N requests")
    parser.add_argument("--rate-scale", type=positive_float,
                        help="replay at this multiple of the rate")
    add_decoding_arguments(parser)
    add_config_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--find-replicas", action="store_true",
                        help="search the fewest replicas that complete every request with p99 "
                        "TTFT within --slo-ttft-s; every run of the search goes to "
                        "OUT/ALLOCATOR/replicas-N")
    parser.add_argument("--slo-ttft-s", type=positive_float, default=2.0,
                        help="the p99 TTFT SLO of --find-replicas (default 2)")


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """How every request decodes (default: as the trace says, one sample for a loaded file)."""
    parser.add_argument("--n", type=positive_int, help="parallel samples per request")
    parser.add_argument("--beam-width", type=positive_int, help="beam search over W beams")
    parser.add_argument("--spec-tokens", type=non_negative_int,
                        help="speculative decoding: draft tokens per step")
    parser.add_argument("--spec-accept", type=probability,
                        help="chance the target accepts each draft token (default 0.8)")


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    """--sliding-window / --full-attention: the attention window of the model (shared with
    `kvharness gpu`)."""
    window = parser.add_mutually_exclusive_group()
    window.add_argument("--sliding-window", type=positive_int, metavar="TOKENS",
                        help="attend only the last TOKENS keys in every layer (default: the "
                             "model's own; mistral-7b 4096)")
    window.add_argument("--full-attention", action="store_true",
                        help="attend every key, even where the model has a sliding window")


def with_window(model, args: argparse.Namespace):
    """The model with the window the flags set (the model as it is when they set none)."""
    if not (args.sliding_window or args.full_attention):
        return model
    return dataclasses.replace(model, sliding_window=args.sliding_window)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that override a RunConfig (shared with other subcommands)."""
    from allocators import SPECS
    from harness.model.config import ROUTERS, SCHEDULING_POLICIES

    parser.add_argument("--allocator", type=allocator_names,
                        help=f"{' | '.join(SPECS)}, or a comma-separated list "
                        "(simulate: one run directory each under --out, and a table)")
    add_param_arguments(parser)
    parser.add_argument("--model", help="model preset (llama3-8b, llama3-70b, qwen2.5-7b, ...)")
    add_window_arguments(parser)
    parser.add_argument("--gpu", help="GPU preset (h100-80gb, h200-141gb, a100-80gb)")
    parser.add_argument("--tp", type=positive_int, help="tensor-parallel degree")
    parser.add_argument("--gpu-memory-utilization", type=fraction, help="in (0, 1]")
    parser.add_argument("--budget-slots", type=positive_int,
                        help="KV slots, instead of memory arithmetic")
    parser.add_argument("--max-num-seqs", type=positive_int)
    parser.add_argument("--max-num-batched-tokens", type=positive_int)
    parser.add_argument("--no-chunked-prefill", action="store_true")
    parser.add_argument("--preemption", choices=("recompute", "swap"))
    parser.add_argument("--swap-space-gib", type=non_negative_float,
                        help="CPU swap space per GPU")
    add_cpu_cache_argument(parser)
    parser.add_argument("--max-model-len", type=positive_int,
                        help="reject longer requests (default: the model's context length)")
    parser.add_argument("--truncate", action="store_true",
                        help="cut prompts and outputs to max_model_len instead of rejecting "
                             "longer requests (counted in the summary)")
    parser.add_argument("--policy", choices=SCHEDULING_POLICIES,
                        help="replica scheduling policy (default vllm-v1: mixed batching)")
    parser.add_argument("--chunk-size", type=positive_int,
                        help="sarathi: the token budget of every step")
    parser.add_argument("--replicas", type=positive_int,
                        help="replicas behind a router (each with the whole config's GPU)")
    parser.add_argument("--router", choices=ROUTERS, help="which replica takes each request")
    parser.add_argument("--horizon-s", type=positive_float, help="stop the clock at this time")
    parser.add_argument("--seed", type=non_negative_int)
    add_kv_dtype_argument(parser)


def add_kv_dtype_argument(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """--kv-dtype: the KV cache's element type (harness.model.config.KV_DTYPES)."""
    from harness.model.config import KV_DTYPES

    said = default or "the config's, bf16"
    parser.add_argument("--kv-dtype", choices=tuple(KV_DTYPES), default=default,
                        help="KV cache element type: bf16, or fp8 (e4m3 with per-head scales: "
                        f"one byte, so a budget holds twice the tokens; default {said})")


def add_cpu_cache_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpu-cache-gib", type=non_negative_float,
                        help="host memory per GPU for the CPU tier of the prefix cache: evicted "
                        "prefix blocks wait there for a hit to copy them back (default 0: none)")


def cpu_cache_bytes(gib: float) -> int:
    return int(gib * GIB)


def build_configs(args: argparse.Namespace) -> list:
    """One RunConfig per chosen allocator: --config with the flags applied."""
    from harness.model.config import RunConfig

    if args.from_run:
        base = RunConfig.from_dict(_run_json(args.from_run)["config"])
    else:
        base = RunConfig.from_file(args.config) if args.config else RunConfig()
    names = list(args.allocator) if args.allocator else [base.allocator.name]
    params = cli_params(names, args.block_size, args.param)
    return [build_config(args, base, name, params[name]) for name in names]


def build_config(args: argparse.Namespace, config, name: str, params: dict[str, Any]):
    """config with the flags applied, running allocator name with params over its own."""
    from harness.model.config import AllocatorConfig
    from harness.model.presets import gpu_preset, model_preset

    top: dict[str, Any] = {}
    if args.model:
        top["model"] = model_preset(args.model)
    top["model"] = with_window(top.get("model", config.model), args)
    if args.gpu:
        top["gpu"] = gpu_preset(args.gpu)
    for flag, field in (("tp", "tp"), ("gpu_memory_utilization", "gpu_memory_utilization"),
                        ("budget_slots", "budget_slots_override"), ("horizon_s", "horizon_s"),
                        ("seed", "seed"), ("replicas", "replicas"), ("router", "router"),
                        ("kv_dtype", "kv_dtype")):
        if getattr(args, flag) is not None:
            top[field] = getattr(args, flag)
    sched: dict[str, Any] = {}
    for field in ("max_num_seqs", "max_num_batched_tokens", "preemption", "max_model_len",
                  "policy", "chunk_size"):
        if getattr(args, field) is not None:
            sched[field] = getattr(args, field)
    if args.no_chunked_prefill:
        sched["chunked_prefill"] = False
    if args.swap_space_gib is not None:
        sched["swap_space_bytes"] = int(args.swap_space_gib * GIB)
    if args.cpu_cache_gib is not None:
        top["cpu_cache_bytes"] = cpu_cache_bytes(args.cpu_cache_gib)
    own = config.allocator.kwargs if name == config.allocator.name else {}
    top["allocator"] = AllocatorConfig.of(name, **{**own, **params})
    top["scheduler"] = dataclasses.replace(config.scheduler, **sched)
    return dataclasses.replace(config, **top)


def trace_spec(args: argparse.Namespace):
    """The trace spec of --trace and its flags, or of --from's run (flags given override)."""
    from workloads import TraceSpec

    if args.from_run:
        recorded = (_run_json(args.from_run).get("trace") or {}).get("spec")
        if recorded is None:
            raise ConfigError(f"{args.from_run}: its trace was built in memory, not loaded from "
                              "a file, so the run cannot be replayed from it")
        spec = TraceSpec.from_dict(recorded)
    else:
        spec = TraceSpec(args.trace, **trace_load_options(args))
    flags = {"max_requests": args.requests, "rate_scale": args.rate_scale, "n": args.n,
             "beam_width": args.beam_width, "spec_tokens": args.spec_tokens,
             "spec_accept": args.spec_accept}
    return dataclasses.replace(spec, **{k: v for k, v in flags.items() if v is not None})


def _run_json(path: Path) -> dict:
    import json

    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not a run.json ({exc})") from None


def main(args: argparse.Namespace) -> int:
    from harness.engine.summary import comparison_table

    # Build every config first: one that cannot be built stops the command before any run writes.
    configs = build_configs(args)
    spec = trace_spec(args)
    trace = spec.load()

    def trace_for(config):
        if args.truncate and config.max_model_len is not None:
            # Cut in the spec, so that run.json says so and --from replays it.
            return dataclasses.replace(spec, cap_lengths_to=config.max_model_len).load()
        return trace

    if args.find_replicas:
        return _find_replicas(configs, trace_for, Path(args.out), args.slo_ttft_s)
    summaries = {}
    for config in configs:
        out = Path(args.out) / config.allocator.name if len(configs) > 1 else Path(args.out)
        summaries[config.allocator.name] = _run(config, trace_for(config), out,
                                                progress=not args.no_progress).summary
    if len(configs) > 1:
        print(comparison_table(summaries))
    return 0


def _find_replicas(configs, trace_for, out: Path, slo_ttft_s: float) -> int:
    """Per allocator, the fewest replicas that serve its trace (trace_for(config)) under the SLO
    (one line each)."""
    from harness.cluster.capacity import smallest_replicas
    from harness.engine.recorder import write_run

    for config in configs:
        name = config.allocator.name
        search = smallest_replicas(
            config, trace_for(config), slo_ttft_s,
            on_run=lambda n, result, name=name: write_run(result, out / name / f"replicas-{n}"))
        found = search.replicas if search.replicas is not None else "none of those tried"
        print(f"{name}: {found} replicas (p99 TTFT <= {slo_ttft_s:g} s, every request "
              f"completed; tried {sorted(search.runs)})")
    return 0


def _run(config, trace, out: Path, *, progress: bool):
    """Simulate, write the run directory, and say in one line how it went (on stderr)."""
    import time

    from harness.cluster.run import simulate
    from harness.engine.recorder import write_run

    started = time.perf_counter()
    result = simulate(config, trace, progress=progress)
    elapsed = time.perf_counter() - started
    write_run(result, out)
    s = result.summary
    print(
        f"{config.allocator.name}: {s['completed']}/{s['requests']} completed, "
        f"{s['rejected']} rejected, {s['truncated_prompts']} prompts truncated, utilization {s['utilization_mean']:.1%}, "
        f"peak running {s['peak_running']}, {s['throughput_tok_s']:.0f} tok/s, "
        f"TTFT p50 {s['ttft_p50_s'] * 1e3:.0f} ms; simulated {s['sim_time_s']:.0f} s "
        f"in {elapsed:.1f} s wall, priced by "
        f"{result.info['executor_details'].get('cost_model', result.info['executor'])} -> {out}",
        file=sys.stderr,
    )
    if "prefix_hit_rate_host" in s:
        print(f"{config.allocator.name}: {host_tier_line(s)}", file=sys.stderr)
    return result


def host_tier_line(s: dict) -> str:
    """A run summary's prefix-cache figures by tier, in words."""
    return (f"prefix hits {s['prefix_hit_rate_gpu']:.1%} GPU, {s['prefix_hit_rate_host']:.1%} "
            f"host, {s['prefix_miss_rate']:.1%} missed (of admitted prompt tokens); PCIe "
            f"{s['host_offload_bytes'] / 1e9:.1f} GB to the host tier, "
            f"{s['host_restore_bytes'] / 1e9:.1f} GB back")
