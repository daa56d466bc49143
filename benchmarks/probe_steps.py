"""GPU probe: the executor's step time at chosen step shapes against its floor, where a step's
device time goes, the linear layers' time over token counts, paged_decode's eager host time, and
paged_decode's time over split counts on batches with one long sequence, and the host time
of each call a timed step makes before its device work runs.

A few minutes on the GPU, before or instead of the whole Azure replay (bench_gpu_decode.py): each
shape is one step through GpuExecutor.step (graphs as a run uses them) over a paged pool of
random KV, timed as `kvharness profile` times it; the floor is benchmarks/gpu_steps.py's. Prints
tables and writes probe_steps.csv and decode_skew.csv to --out.

    PYTHONPATH=. python benchmarks/probe_steps.py --out "$OUT"
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import gpu_steps

from allocators import OutOfKVMemory, spec_of
from harness.engine.executor import KVGeometry
import harness.gpu.executor as executor_module
from harness.gpu.executor import GpuExecutor, build_decoder
from harness.gpu.profile import PointTimer, fill_random, profile_trace
from harness.gpu.profile_grid import ProfilePoint, assign_seq_ids
from harness.gpu.setup import gpu_run_config
from harness.model.budget import bytes_per_token
from harness.model.planner import run_params
from harness.model.presets import model_preset

CONTEXT = 1500  # decode contexts: about the Azure slice's
POINTS = (
    [ProfilePoint("decode", (CONTEXT,) * b) for b in (1, 8, 32, 48, 64)]
    + [ProfilePoint("mixed", (CONTEXT,) * d, start, tokens) for d, start, tokens in
       ((44, 1000, 2), (40, 700, 300), (8, 0, 96), (40, 3000, 1100), (40, 0, 4000),
                            (16, 0, 200))]
)
# decode 48; 44 decodes + 2 prefill tokens; 40 decodes + 300; 8 decodes + a fresh 96-token
# prompt; 16 decodes + a fresh 200-token prompt (the Azure run's typical mixed step of at most
# 256 tokens)
PROFILED = (0, 3, 5, 6, 7, 10)
TOKEN_SIZES = (32, 48, 64, 128, 192, 256, 320, 384, 448, 512, 768, 1024)


def gemm_ms(decoder) -> dict[int, float]:
    """Every layer's four linear layers at these token counts (torch.matmul, as the floor)."""
    return {tokens: gpu_steps.linear_layers_s(decoder, tokens) * 1e3 for tokens in TOKEN_SIZES}


def skew_sweep() -> pd.DataFrame:
    """paged_decode at llama3-8b heads over block tables 16,384 tokens wide (as a graph's are),
    every split count against the default, on batches of short contexts with and without one
    long sequence: whether the longest sequence, not the batch's total, sets the time."""
    from bench_paged_decode import make_case, time_us
    from kernels.paged_decode import paged_decode
    from kernels.segments import segment_table

    rows = []
    for batch in (8, 16, 32, 48, 64):
        case = make_case(batch, 16384, seed=batch)
        k_segs, v_segs, bps = case.segments(16)
        table = segment_table(k_segs, v_segs)
        tables = case.block_tables(16, "shuffled", 1)
        for longest in (1000, 8192, 16384):
            lens = torch.full((batch,), 1000, dtype=torch.int32, device="cuda")
            lens[0] = longest
            for splits in (None, 1, 2, 4, 8, 16, 32):
                def call(case=case, lens=lens, splits=splits):
                    return paged_decode(case.q, None, None, tables, lens, bps,
                                        num_splits=splits, table=table)
                rows.append(dict(batch=batch, longest=longest, others=1000,
                                 splits="default" if splits is None else splits,
                                 median_us=time_us(call),
                                 kv_bytes=int(lens.sum()) * 8 * 128 * 2 * 2))
        del case
        torch.cuda.empty_cache()
    return pd.DataFrame(rows)


def direct_launch_check() -> str:
    """A first paged_decode call (through the JIT) and a second (the compiled kernels launched
    directly) on the same inputs: equal, and both near the reference."""
    from bench_paged_decode import make_case, max_abs_err, paged_call

    case = make_case(4, 2048, seed=1)
    tables = case.block_tables(16, "shuffled", 1)
    call = paged_call(case, 16, tables)
    first, second = call(), call()
    return (f"equal {torch.equal(first, second)}, "
            f"max abs error {max_abs_err(case, second, 16, tables)[0]:.2e}")


def host_breakdown(calls: int = 2000) -> str:
    """Where an eager paged_decode call at 1x4096 spends its host time: the whole call, then
    each of its parts alone (median microseconds of `calls` calls each)."""
    import kernels.paged_decode as pd_module
    from bench_paged_decode import make_case
    from kernels.launch import launch_compiled, specialization
    from kernels.segments import segment_table

    case = make_case(1, 4096, seed=0)
    tables = case.block_tables(16, "contiguous", 0)
    k_segs, v_segs, bps = case.segments(16)
    table = segment_table(k_segs, v_segs)
    lens, q = case.context_lens(), case.q
    pd_module.paged_decode(q, None, None, tables, lens, bps, table=table)
    launch = pd_module._launch_for(q, table, tables, lens, bps, None, None, None)
    out = torch.empty_like(q)
    splits = launch.plan.num_splits
    part_out, part_lse = launch.partials or (out, out)
    args = (q, table.k_base, table.v_base, table.k_offsets, table.v_offsets, q, q, tables, lens,
            out, part_out, part_lse, launch.counters, q.stride(0), q.stride(1), tables.stride(0),
            out.stride(0), out.stride(1), 0, 0, 0.1, splits, 0)
    key, bound = specialization(args)
    compiled, constants = launch.kernel._compiled[key]
    runner = compiled[(1, table.num_kv_heads, splits)]
    parts = {
        "paged_decode": lambda: pd_module.paged_decode(q, None, None, tables, lens, bps,
                                                       table=table),
        "_launch_for": lambda: pd_module._launch_for(q, table, tables, lens, bps, None, None,
                                                     None),
        "empty_like (the output)": lambda: torch.empty_like(q),
        "specialization (kernel's args)": lambda: specialization(args),
        "kernel launch (DirectLaunch)": lambda: launch.kernel((1, table.num_kv_heads, splits),
                                                              *args),
        "launch_compiled (no launch metadata)": lambda: launch_compiled(
            compiled, (1, table.num_kv_heads, splits), (*bound, *constants)),
        "compiled[grid](...) (Triton's launch)": lambda: compiled[
            (1, table.num_kv_heads, splits)](*bound, *constants),
        "runner(...) (grid bound)": lambda: runner(*bound, *constants),
        "runner(...) with tensors": lambda: runner(*args, *constants),
    }
    lines = [f"eager paged_decode at 1x4096, {splits} splits: host time by part (median us)"]
    for name, fn in parts.items():
        lines.append(f"  {name:34s} {gpu_steps.host_us(fn, calls, warmup=50):7.2f}")
    return "\n".join(lines)


class EnqueueParts:
    """Host seconds of the calls a timed step makes before its device work can run (the
    executor's enqueue_s; while the host makes them the GPU, idle since the last step, waits),
    and of the host preparation's call after it (the sampled tokens kept): each wrapped call's
    durations, per call name, since the last reset."""

    def __init__(self, executor) -> None:
        self.seconds: dict[str, list[float]] = {}
        parts = [(executor.memory, "apply", "memory.apply"),
                 (executor._device_tables, "sync", "device_tables.sync")]
        for graphs, name in ((executor._graphs, "decode graphs"), (executor._mixed, "mixed")):
            if graphs is not None:
                parts.append((graphs, "run", f"{name}.run"))
        if executor._mixed is not None:
            parts.append((executor._mixed.buffers, "load", "mixed buffers.load"))
        parts += [(torch.cuda.CUDAGraph, "replay", "graph.replay"),
                  (executor_module, "keep_sampled", "(after) keep_sampled")]
        self._originals = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in parts]
        for owner, attr, name in parts:
            setattr(owner, attr, self._timed(getattr(owner, attr), name))

    def restore(self) -> None:
        """The wrapped calls as they were."""
        for owner, attr, original in self._originals:
            setattr(owner, attr, original)

    def _timed(self, fn, name):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            result = fn(*args, **kwargs)
            self.seconds.setdefault(name, []).append(time.perf_counter() - t0)
            return result
        return call

    def report(self) -> str:
        """Median microseconds per call and calls of each part since the last report."""
        text = ", ".join(f"{name} {1e6 * np.median(s):.0f} us x{len(s)}"
                         for name, s in self.seconds.items())
        self.seconds = {}
        return text


def kernel_table(timer: PointTimer, point, ids) -> str:
    """The step's device kernels by total time (torch.profiler; graph replays included), the
    point just measured, so captured and warm."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        timer.measure(point, ids)
    return prof.key_averages().table(sort_by="device_time_total", row_limit=24,
                                     max_name_column_width=60)


def probe_allocator(name: str, args, decoder, ceilings) -> tuple[list[dict], list[str]]:
    """Every point through a fresh executor over the allocator (its run's parameters, random
    KV in the segments it starts with): the rows, and the kernel tables of PROFILED points. A
    point whose sequences the allocator cannot hold is left out, said so."""
    device = torch.device("cuda")
    config = gpu_run_config(device, model="llama3-8b", allocator=name,
                            budget_slots=args.budget_slots)
    allocator = spec_of(name).build(args.budget_slots, run_params(config))
    seq_ids, first = assign_seq_ids(list(POINTS))
    geometry = KVGeometry(allocator.block_size, allocator.blocks_per_segment, args.budget_slots)
    executor = GpuExecutor(config, geometry, decoder=decoder, trace=profile_trace(first))
    executor.pool.sync(list(allocator.segments()), [])
    fill_random(executor.pool, allocator.segments(), seed=0)
    timer = PointTimer(executor, allocator, bytes_per_token=bytes_per_token(config.model),
                       repeats=5, warmup=2)
    rows, tables = [], []
    parts = EnqueueParts(executor)
    for index, (point, ids) in enumerate(zip(POINTS, seq_ids)):
        try:
            row = timer.measure(point, ids)
        except OutOfKVMemory as exc:
            for sid in ids:  # those allocated before the one that did not fit
                with contextlib.suppress(ValueError):
                    allocator.free(sid)
            print(f"{name}: point {index} left out: {exc}", flush=True)
            continue
        enqueue = parts.report()
        if index in PROFILED:  # before a later point gives these ids other lengths
            tables.append(f"{name}, point {index}:\n{kernel_table(timer, point, ids)}")
        last = executor.step_log.frame().tail(1)
        row["allocator"] = name
        row["floor_ms"] = float(gpu_steps.floor_s(last, ceilings)[0]) * 1e3
        row["ratio"] = row["measured_ms"] / row["floor_ms"]
        row["graph"] = bool(last.graph.iloc[0])
        row["host_prep_ms"] = float(last.host_prep_s.iloc[0]) * 1e3
        row["enqueue_ms"] = float(last.enqueue_s.iloc[0]) * 1e3
        rows.append(row)
        print(f"{name:9s} {row['kind']:6s} decode {row['decode_tokens']:3d} prefill "
              f"{row['prefill_tokens']:4d} (ctx {row['prefill_context_tokens']:5d}) "
              f"graph {row['graph']:d}: "
              f"{row['measured_ms']:7.2f} ms / floor {row['floor_ms']:7.2f} = {row['ratio']:.2f}"
              f"  host prep {row['host_prep_ms']:.3f} ms, enqueue {row['enqueue_ms']:.3f} ms: "
              f"{enqueue}", flush=True)
    parts.restore()
    return rows, tables


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--budget-slots", type=int, default=131072)
    parser.add_argument("--allocators", default="paged",
                        help="comma-separated: the points through each, one after another")
    parser.add_argument("--steps-only", action="store_true",
                        help="the points alone: no host breakdown, linear-layer grid or skew")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    device = torch.device("cuda")
    decoder = build_decoder(model_preset("llama3-8b"), device=device, dtype="bfloat16")
    if not args.steps_only:
        host_us = gpu_steps.paged_decode_host_us()
        print(f"paged_decode eager host time at 1x4096: {host_us:.1f} us; direct launches "
              f"against the JIT's and the reference: {direct_launch_check()}", flush=True)
        print(host_breakdown(), flush=True)
    ceilings = gpu_steps.measure_ceilings(decoder)
    print(f"set up in {time.perf_counter() - started:.0f} s", flush=True)
    rows, tables = [], []
    for name in args.allocators.split(","):
        more_rows, more_tables = probe_allocator(name, args, decoder, ceilings)
        rows += more_rows
        tables += more_tables
    frame = pd.DataFrame(rows)
    frame.to_csv(args.out / "probe_steps.csv", index=False, float_format="%.6g")
    if len(frame.allocator.unique()) > 1:
        print(frame.pivot_table(index=["kind", "decode_tokens", "prefill_tokens"],
                                columns="allocator", values="measured_ms").round(3).to_string(),
              flush=True)
    for table in tables:
        print(table, flush=True)
    if not args.steps_only:
        grid = gemm_ms(decoder)
        print("linear layers (all layers, torch.matmul) ms by tokens: "
              + ", ".join(f"{t}: {ms:.2f}" for t, ms in grid.items()), flush=True)
        skew = skew_sweep()
        skew.to_csv(args.out / "decode_skew.csv", index=False, float_format="%.6g")
        print(skew.pivot_table(index=["batch", "longest"], columns="splits",
                               values="median_us").round(1).to_string(), flush=True)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
