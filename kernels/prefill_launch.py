"""Launch heuristics of the paged prefill kernel (kernels/paged_prefill.py): its launch shape per
device and row width (default_config), and how many splits of each query tile's keys fill one
wave of the GPU (choose_num_splits). Plain Python: the measurements behind each rule are cited
where it is made.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.split_kv import MAX_SPLITS


@dataclass(frozen=True)
class PrefillConfig:
    """Launch shape: query rows per tile (tokens x grouped heads), keys per tile, warps, stages."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


# GPU: 128 x 64 tiles, the flash-attention forward shape that keeps a head_dim-128 tile of Q, a
# pipelined K/V tile per stage and the float32 accumulator on chip with 8 warps
# (the alternatives measured by benchmarks/bench_prefill.py --tune are in
# benchmarks/results/tuning/prefill_tune_h200.csv). Wide rows (float32 at head_dim
# 128) would not fit those tiles in shared memory and take the small GPU shape. The interpreter
# runs one program at a time in numpy, where small tiles waste the least on masked rows.
GPU_CONFIG = PrefillConfig(block_m=128, block_n=64, num_warps=8, num_stages=3)
SMALL_GPU_CONFIG = PrefillConfig(block_m=64, block_n=32, num_warps=4, num_stages=2)
INTERPRETER_CONFIG = PrefillConfig(block_m=16, block_n=16, num_warps=4, num_stages=1)
SHARED_MEMORY_BUDGET = 160 * 1024  # bytes of Q and staged K/V tiles, under Hopper's 227 KiB
# A split streams at least this many key tiles of the longest key span: its pipeline
# (num_stages) has loads to overlap, and its fixed costs (its Q tile, its partial output) are
# shared by a few tiles of K/V.
MIN_SPLIT_TILES = 2


def default_config(device: torch.device, row_bytes: int) -> PrefillConfig:
    """The launch shape for query and key rows of row_bytes (head_dim * element size)."""
    if device.type != "cuda":
        return INTERPRETER_CONFIG
    c = GPU_CONFIG
    if (c.block_m + 2 * c.block_n * c.num_stages) * row_bytes > SHARED_MEMORY_BUDGET:
        return SMALL_GPU_CONFIG
    return c


def choose_num_splits(programs: int, max_keys: int, num_sms: int, *, block_n: int,
                      programs_per_sm: tuple[int, int]) -> int:
    """Splits of each query tile's keys for a grid of `programs` (query tiles x KV heads) over
    at most max_keys keys per tile; programs_per_sm: how many programs of the unsplit and of
    the split kernel one SM holds. A grid that fills a wave of the GPU is not split. A smaller
    one is split into as many as still fit in one wave, so that the padding programs of a grid
    bound (which return at once) never add a wave; each split at least MIN_SPLIT_TILES key
    tiles of max_keys, and their number a power of two (few compiled variants: a caller can
    compile them all before timing anything)."""
    unsplit, split = programs_per_sm
    if programs >= unsplit * num_sms:
        return 1
    splits = min(MAX_SPLITS, max_keys // (MIN_SPLIT_TILES * block_n), split * num_sms // programs)
    return 1 << (max(splits, 1).bit_length() - 1)
