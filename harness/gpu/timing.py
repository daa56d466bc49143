"""Timing device work: CUDA events around it on a GPU (launch gaps included), the host clock on a
CPU, where the work runs as it is called. Timing host work: the wall clock, and the thread's own
CPU time beside it."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


class DeviceTimer:
    """CUDA events around the device work (launch gaps included), or the host clock on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.cuda:
            self._start.record()
        else:
            self._t0 = time.perf_counter()

    def stop_s(self) -> float:
        if self.cuda:
            self._end.record()
            self._end.synchronize()
            return self._start.elapsed_time(self._end) / 1e3
        return time.perf_counter() - self._t0


class HostClock:
    """The wall time and the calling thread's CPU time of the host work between start() and
    stop(), summed over such intervals (started on creation). CPU time short of wall time is
    time the thread was off its core (preempted, descheduled, waiting on the kernel)."""

    __slots__ = ("wall_s", "cpu_s", "_wall", "_cpu")

    def __init__(self) -> None:
        self.wall_s = self.cpu_s = 0.0
        self.start()

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.thread_time()

    def stop(self) -> None:
        self.wall_s += time.perf_counter() - self._wall
        self.cpu_s += time.thread_time() - self._cpu


def median_s(fn: Callable[[], object], device: torch.device, repeats: int = 5) -> float:
    """Median seconds of fn over `repeats` timed calls, after one untimed."""
    fn()
    timer = DeviceTimer(device)
    times = []
    for _ in range(repeats):
        timer.start()
        fn()
        times.append(timer.stop_s())
    return statistics.median(times)
