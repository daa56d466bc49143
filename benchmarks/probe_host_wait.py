"""Does the way the host waits for the GPU change the speed of the host work after it? Two parts,
on one GPU:

- a fixed host workload (numpy indexing over 200-entry arrays and a Python pass over 200
  objects, 20 times) right after a wait of 0-180 ms: for GPU work with the event's blocking
  synchronize() (DeviceTimer's wait), for GPU work polling the event, and sleeping on the host;
- the executor's host preparation per step (benchmarks/probe_host_prep.py's workloads, the tiny
  model) through paged and segmented, with DeviceTimer as it is and patched to poll its end
  event instead.

Writes host_wait_<gpu>.csv to --out:

    PYTHONPATH=.:benchmarks python benchmarks/probe_host_wait.py --out OUT
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench_gpu_decode import device_slug, header, write_csv
from harness.gpu.executor import build_decoder
from harness.gpu.timing import DeviceTimer
from harness.model.presets import model_preset
from probe_host_prep import steps_by_kind

WAITS_MS = (0, 1, 13, 50, 180)
TRIALS = 30
COLUMNS = ("part", "wait", "wait_ms", "allocator", "kind", "steps", "p50_us", "p90_us")


class _Item:
    __slots__ = ("seq_id",)

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id


def make_work():
    """The fixed host workload."""
    rng = np.random.default_rng(0)
    other = rng.integers(0, 1000, 200)
    table = rng.integers(0, 1 << 20, (256, 4096)).astype(np.int32)
    items = [_Item(i) for i in range(200)]

    def work() -> int:
        total = 0
        for _ in range(20):
            ids = np.array([item.seq_id for item in items])
            cols = ids * 3 + other
            total += int(table[ids % 256, cols % 4096].sum())
            total += int(np.count_nonzero(np.concatenate([ids, cols]) > 500))
        return total

    return work


def after_waits() -> list[dict]:
    work, event = make_work(), torch.cuda.Event()
    t0 = time.perf_counter()
    torch.cuda._sleep(10_000_000)
    torch.cuda.synchronize()
    cycles_per_s = 10_000_000 / (time.perf_counter() - t0)

    def wait(how: str, ms: int) -> None:
        if how == "host sleep":
            time.sleep(ms / 1e3)
            return
        torch.cuda._sleep(int(cycles_per_s * ms / 1e3))
        event.record()
        if how == "gpu, synchronize()":
            event.synchronize()
        else:
            while not event.query():
                pass

    rows = []
    for how in ("gpu, synchronize()", "gpu, polling", "host sleep"):
        for ms in WAITS_MS:
            times = []
            for _ in range(TRIALS):
                wait(how, ms)
                t0 = time.perf_counter()
                work()
                times.append(time.perf_counter() - t0)
            rows.append({"part": "work after a wait", "wait": how, "wait_ms": ms,
                         "allocator": "", "kind": "", "steps": TRIALS,
                         "p50_us": float(np.median(times)) * 1e6,
                         "p90_us": float(np.percentile(times, 90)) * 1e6})
            print(f"{how:20s} {ms:4d} ms: work p50 {rows[-1]['p50_us']:.1f} us", flush=True)
    return rows


def polling_stop_s(self: DeviceTimer) -> float:
    self._end.record()
    while not self._end.query():
        pass
    return self._start.elapsed_time(self._end) / 1e3


def host_prep(device: torch.device) -> list[dict]:
    decoder = build_decoder(model_preset("tiny"), device=device, dtype="float32")
    blocking = DeviceTimer.stop_s
    rows = []
    try:
        for how, stop_s in (("synchronize()", blocking), ("polling", polling_stop_s)) * 2:
            DeviceTimer.stop_s = stop_s
            for allocator in ("paged", "segmented"):
                rows += _host_prep_rows(how, allocator, decoder)
    finally:
        DeviceTimer.stop_s = blocking
    return rows


def _host_prep_rows(how: str, allocator: str, decoder) -> list[dict]:
    rows, by_kind = [], steps_by_kind(allocator, decoder)
    for kind in ("decode", "mixed"):
        prep = by_kind[kind].host_prep_s.to_numpy() * 1e6
        rows.append({"part": "host preparation", "wait": how, "wait_ms": "",
                     "allocator": allocator, "kind": kind, "steps": len(prep),
                     "p50_us": float(np.median(prep)), "p90_us": float(np.percentile(prep, 90))})
        print(f"{how:14s} {allocator:9s} {kind:6s}: host prep p50 {rows[-1]['p50_us']:.1f} us",
              flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda")
    rows = after_waits() + host_prep(device)
    command = "python benchmarks/probe_host_wait.py " + " ".join(sys.argv[1:])
    write_csv(args.out / f"host_wait_{device_slug(device)}.csv",
              header(device, command)
              + [f"# setup: work after a wait: {TRIALS} trials per row, the workload of "
                 "make_work(); host preparation: probe_host_prep.py's wave (decode) and chunks "
                 "(mixed) workloads, tiny model, float32, each wait twice in the order "
                 "synchronize(), polling, synchronize(), polling"],
              rows, COLUMNS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
