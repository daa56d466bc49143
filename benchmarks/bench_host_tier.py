"""GPU benchmark of the prefix cache's host tier: the executor's real copies between the KV pool
and pinned host blocks (harness.gpu.host_tier), against the pinned copy bandwidth floor.

For a model's KV shape (llama3.1-8b by default: 128 KiB a token in bf16) and block sizes 16
(paged, hybrid) and 1 (segmented's pages), a restore copies `blocks` host blocks into random
pool blocks (host -> device, then a scatter into the pool) and an offload does the reverse (a
gather, then device -> host), with the host blocks in one run (the tier hands out the lowest
free blocks, so an eviction's blocks are mostly consecutive) or scattered (one copy per block,
the worst case). Each is timed with CUDA events (median of REPEATS, after a warm-up) and set
beside its floor measured here too: one contiguous pinned copy of the same bytes in the same
direction. priced_ms is what the cost model charges for those bytes (the GPU preset's PCIe
bandwidth). Every restore is checked to bring back the values offloaded. Writes
host_tier_<device>.csv:

    PYTHONPATH=. python benchmarks/bench_host_tier.py --out "$OUT"
    PYTHONPATH=. python benchmarks/bench_host_tier.py --device cpu --tokens 16,64 --out /tmp  # smoke
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench_gpu_decode import device_slug, header, write_csv
from harness.engine.executor import KVGeometry
from harness.gpu.host_tier import HostTierBlocks
from harness.gpu.kv_pool import KVPool
from harness.gpu.setup import gpu_preset_for
from harness.model.budget import bytes_per_token
from harness.model.presets import gpu_preset, model_preset

BLOCK_SIZES = (16, 1)
# Tokens per copy: a block of 16 up to a 16k-token prefix (2 GiB of llama3.1-8b KV).
TOKENS = (16, 256, 1024, 4096, 16384)
REPEATS = 10
COLUMNS = ("block_size", "blocks", "tokens", "bytes", "direction", "host_layout", "median_ms",
           "gbps", "floor_ms", "floor_gbps", "ratio_to_floor", "priced_ms")


class Timer:
    """Median milliseconds of fn: CUDA events around it on a GPU, the host clock on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def median_ms(self, fn) -> float:
        fn()  # warm-up: allocator caches, first launches
        self._sync()
        times = []
        for _ in range(REPEATS):
            if self.cuda:
                start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def floor_ms(timer: Timer, num_bytes: int, device: torch.device, to_device: bool) -> float:
    """One contiguous copy of num_bytes between pinned host memory and the device."""
    pin = device.type == "cuda"
    host = torch.empty(num_bytes, dtype=torch.uint8, pin_memory=pin)
    dev = torch.empty(num_bytes, dtype=torch.uint8, device=device)
    src, dst = (host, dev) if to_device else (dev, host)
    return timer.median_ms(lambda: dst.copy_(src, non_blocking=True))


def cases(block_size: int, pool_blocks: int, blocks: int, rng: np.random.Generator):
    """(host layout, pool units, host blocks) of one size: one run, and scattered."""
    units = tuple(rng.choice(pool_blocks, blocks, replace=False).tolist())
    scattered = tuple((rng.permutation(blocks) * 2).tolist())  # no two consecutive
    yield "one run", units, tuple(range(blocks))
    yield "scattered", units, scattered


def measure(block_size: int, model, device: torch.device, timer: Timer, pcie_bytes_s: float,
            tokens: list[int]) -> list[dict]:
    token_bytes = bytes_per_token(model, 1)
    sizes = [count // block_size for count in tokens if count >= block_size]
    most = max(sizes)
    pool_blocks = 2 * most  # room to scatter the restored blocks
    geometry = KVGeometry(block_size, pool_blocks, pool_blocks * block_size, 2 * most)
    pool = KVPool(geometry, num_layers=model.num_layers, num_kv_heads=model.num_kv_heads,
                  head_dim=model.head_dim, dtype=torch.bfloat16, device=device)
    pool.sync([0], [])
    everything = pool.index(np.arange(pool_blocks * block_size))
    pool.write_slots(everything, torch.randn(
        model.num_layers, 2, pool_blocks * block_size, model.num_kv_heads, model.head_dim,
        device=device).to(torch.bfloat16))
    tier = HostTierBlocks(2 * most, pool)
    rng = np.random.default_rng(block_size)
    rows = []
    for blocks in sizes:
        num_bytes = blocks * block_size * token_bytes
        floors = {to_device: floor_ms(timer, num_bytes, device, to_device)
                  for to_device in (True, False)}
        for layout, units, host in cases(block_size, pool_blocks, blocks, rng):
            slots = (np.asarray(units)[:, None] * block_size + np.arange(block_size)).ravel()
            written = pool.read_slots(pool.index(slots)).clone()
            offload = timer.median_ms(lambda: tier.offload(units, host))
            back = tuple(reversed(units))  # into other blocks than they came from
            restore = timer.median_ms(lambda: tier.restore(back, host))
            again = pool.read_slots(pool.index(
                (np.asarray(back)[:, None] * block_size + np.arange(block_size)).ravel()))
            if not torch.equal(again, written):
                raise SystemExit(f"restore of {blocks} blocks of {block_size} ({layout}) did "
                                 "not bring back what was offloaded")
            pool.write_slots(pool.index(slots), written)  # as it was, for the next case
            for direction, ms, to_device in (("restore", restore, True),
                                             ("offload", offload, False)):
                rows.append(dict(
                    block_size=block_size, blocks=blocks, tokens=blocks * block_size,
                    bytes=num_bytes, direction=direction, host_layout=layout,
                    median_ms=round(ms, 4), gbps=round(num_bytes / ms / 1e6, 2),
                    floor_ms=round(floors[to_device], 4),
                    floor_gbps=round(num_bytes / floors[to_device] / 1e6, 2),
                    ratio_to_floor=round(ms / floors[to_device], 3),
                    priced_ms=round(num_bytes / pcie_bytes_s * 1e3, 4)))
                print(f"bs {block_size:3d} {blocks:5d} blocks {direction:7s} {layout:9s} "
                      f"{ms:9.3f} ms {num_bytes / ms / 1e6:7.1f} GB/s, floor "
                      f"{num_bytes / floors[to_device] / 1e6:7.1f} GB/s", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory of the CSV")
    parser.add_argument("--model", default="llama3.1-8b", help="the KV shape (model preset)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tokens", default=",".join(map(str, TOKENS)),
                        help="comma-separated tokens per copy")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    model = model_preset(args.model)
    gpu = gpu_preset(gpu_preset_for(device) if device.type == "cuda" else "h200-141gb")
    timer = Timer(device)
    tokens = [int(count) for count in args.tokens.split(",")]
    rows = []
    for block_size in BLOCK_SIZES:
        rows += measure(block_size, model, device, timer, gpu.pcie_bytes_s, tokens)
    command = "PYTHONPATH=. python " + shlex.join(["benchmarks/bench_host_tier.py",
                                                    *(argv if argv is not None else sys.argv[1:])])
    lines = header(device, command) + [
        f"# model: {model.name} ({bytes_per_token(model, 1)} bytes of KV a token, bf16)",
        f"# priced: bytes / {gpu.name} pcie_bytes_s {gpu.pcie_bytes_s:.3g}"]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"host_tier_{device_slug(device)}.csv"
    write_csv(path, lines, rows, COLUMNS)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
