"""Timing device work: CUDA events around it on a GPU (launch gaps included), the host clock on a
CPU, where the work runs as it is called."""
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
