"""Where a slow step's host preparation goes: issue 12's Azure run (bench_gpu_decode.py, whose
arguments this takes after its own), with each step's host preparation counted in the engine
thread's context switches beside its wall and CPU time (the step log's host_prep_s and
host_prep_cpu_s), and with --engine-core N the engine's thread alone on core N from the first
step on (the process's other threads, and N's SMT siblings, kept off it).

Writes host_core_steps.csv to --out (one row per step of every allocator, and of the warm-up
run) beside bench_gpu_decode.py's files:

    PYTHONPATH=.:benchmarks python benchmarks/probe_host_core.py [--engine-core N] --out OUT \\
        --budget-slots 393216 --baseline-requests 0
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
from pathlib import Path

import pandas as pd
import torch

import bench_gpu_decode
import harness.gpu.executor as executor
from bench_gpu_decode import header, write_csv
from harness.gpu.timing import HostClock

COLUMNS = ("allocator", "step", "graph", "decode_seqs", "prefill_tokens", "host_prep_ms",
           "host_prep_cpu_ms", "involuntary_switches", "voluntary_switches")


def _switches() -> tuple[int, int]:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_nivcsw, usage.ru_nvcsw


class CountingClock(HostClock):
    """HostClock that also counts the thread's context switches inside its intervals."""

    __slots__ = ("switches", "_at")

    def __init__(self) -> None:
        self.switches = (0, 0)
        super().__init__()

    def start(self) -> None:
        self._at = _switches()
        super().start()

    def stop(self) -> None:
        super().stop()
        now = _switches()
        self.switches = tuple(s + n - a for s, n, a in zip(self.switches, now, self._at))


def dedicate_core(core: int) -> str:
    """The calling thread on `core` alone; every other thread of the process, and the core's
    SMT siblings, off it. Returns what was done, for the file's header."""
    torch.ones(1 << 22).sum()  # start the intra-op thread pool now, so it is moved too
    siblings = Path(f"/sys/devices/system/cpu/cpu{core}/topology/thread_siblings_list")
    taken = {core} | set(_cpu_list(siblings.read_text())) if siblings.exists() else {core}
    rest = os.sched_getaffinity(0) - taken
    me = threading.get_native_id()
    others = [int(t) for t in os.listdir("/proc/self/task") if int(t) != me]
    for tid in others:
        os.sched_setaffinity(tid, rest)
    os.sched_setaffinity(0, {core})
    return (f"on core {core} alone ({len(others)} other threads on "
            f"{len(rest)} cores, kept off {sorted(taken)})")


def _cpu_list(text: str) -> list[int]:
    cores = []
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        cores += range(int(lo), int(hi or lo) + 1)
    return cores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine-core", type=int, default=None)
    args, rest = parser.parse_known_args()
    out = Path(rest[rest.index("--out") + 1])
    command = "python benchmarks/probe_host_core.py " + " ".join(sys.argv[1:])
    rows, setup, running = [], ["unpinned"], ["warm-up"]
    step, warm_up = executor.GpuExecutor.step, executor.GpuExecutor._warm_up
    run_allocator = bench_gpu_decode.run_allocator

    def counted_step(self, batch):
        clocks = []
        executor.HostClock = lambda: clocks.append(CountingClock()) or clocks[-1]
        seconds = step(self, batch)
        rec = self.step_log._rows[-1]
        rows.append({"allocator": running[0], "step": len(self.step_log._rows) - 1,
                     "graph": rec.graph, "decode_seqs": rec.decode_seqs,
                     "prefill_tokens": rec.prefill_tokens,
                     "host_prep_ms": rec.host_prep_s * 1e3,
                     "host_prep_cpu_ms": rec.host_prep_cpu_s * 1e3,
                     "involuntary_switches": clocks[0].switches[0],
                     "voluntary_switches": clocks[0].switches[1]})
        return seconds

    def pinned_warm_up(self, batch):
        warm_up(self, batch)
        if args.engine_core is not None and setup == ["unpinned"]:
            setup[0] = dedicate_core(args.engine_core)
            print(f"engine thread {setup[0]}", flush=True)

    def named_run(args, name, trace, decoder):
        running[0] = name
        return run_allocator(args, name, trace, decoder)

    bench_gpu_decode.run_allocator = named_run
    executor.GpuExecutor.step = counted_step
    executor.GpuExecutor._warm_up = pinned_warm_up
    sys.argv = ["bench_gpu_decode.py", *rest]
    try:
        return bench_gpu_decode.main()
    finally:
        lines = header(torch.device("cuda" if torch.cuda.is_available() else "cpu"), command)
        lines.append(f"# engine thread: {setup[0]}")
        write_csv(out / "host_core_steps.csv", lines, rows, COLUMNS)
        print(*summary(pd.DataFrame(rows, columns=COLUMNS)), sep="\n")


def summary(steps: pd.DataFrame) -> list[str]:
    """Per allocator: host preparation's wall and CPU time, and the steps over 1 ms of it."""
    lines = []
    for name, log in steps.groupby("allocator", sort=False):
        over = log[log.host_prep_ms > 1.0]
        wall, cpu = log.host_prep_ms, log.host_prep_cpu_ms
        lines.append(
            f"{name}: {len(log)} steps; wall p50/p99/max {wall.median():.3f}/"
            f"{wall.quantile(0.99):.3f}/{wall.max():.3f} ms, CPU {cpu.median():.3f}/"
            f"{cpu.quantile(0.99):.3f}/{cpu.max():.3f} ms; {len(over)} over 1 ms (CPU time "
            f"{', '.join(f'{c:.2f}' for c in over.host_prep_cpu_ms)}; involuntary switches "
            f"{over.involuntary_switches.sum()}, all steps {log.involuntary_switches.sum()})")
    return lines


if __name__ == "__main__":
    sys.exit(main())
