"""The garbage collector's pauses during a GPU run, and how many fall inside an executor step
(its host preparation, its launches or its wait for the device): bench_gpu_decode.py run as
it is (the same arguments) with a gc callback that times every collection. Prints, per
generation, the collections, their total and largest pause, and those inside a step:

    PYTHONPATH=.:benchmarks python benchmarks/probe_gc_pauses.py --out OUT --allocators paged \
        --budget-slots 393216 --baseline-requests 0
"""
from __future__ import annotations

import gc
import sys
import time
from collections import defaultdict

import bench_gpu_decode
from harness.gpu import executor as executor_module

PAUSES: dict[int, list[tuple[float, bool]]] = defaultdict(list)  # gen -> (seconds, in a step)
_state = {"start": 0.0, "in_step": False}


def _timed(phase: str, info: dict) -> None:
    if phase == "start":
        _state["start"] = time.perf_counter()
    else:
        PAUSES[info["generation"]].append((time.perf_counter() - _state["start"],
                                           _state["in_step"]))


def _marking(step):
    """The executor's step, marking the collector's pauses inside it."""
    def wrapped(self, batch):
        _state["in_step"] = True
        try:
            return step(self, batch)
        finally:
            _state["in_step"] = False
    return wrapped


def main() -> int:
    gc.callbacks.append(_timed)
    executor_module.GpuExecutor.step = _marking(executor_module.GpuExecutor.step)
    code = bench_gpu_decode.main()
    for gen in sorted(PAUSES):
        pauses = PAUSES[gen]
        inside = [s for s, in_step in pauses if in_step]
        print(f"gc generation {gen}: {len(pauses)} collections, "
              f"{sum(s for s, _ in pauses) * 1e3:.1f} ms in all, "
              f"largest {max(s for s, _ in pauses) * 1e3:.3f} ms; {len(inside)} inside a step, "
              f"largest {max(inside, default=0) * 1e3:.3f} ms, over 0.1 ms: "
              f"{sum(s > 1e-4 for s in inside)}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
