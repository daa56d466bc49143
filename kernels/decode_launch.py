"""Launch heuristics of the paged decode kernel (kernels/paged_decode.py): its launch shape per
block size, split count and cache dtype (default_config), the split count that fills the GPU
in whole waves (choose_num_splits), a wave being as many programs as the GPU holds at once
(read off the compiled kernel by the caller), and kernels/fp8_decode.py's split count
(choose_fp8_num_splits). Plain Python: the measurements behind each rule
are cited where it is made.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from kernels.split_kv import MAX_SPLITS

TILE_TOKENS = 128
SHORT_TILE_TOKENS = 64
# Splits that only even out the last wave of a grid larger than the GPU stay this long: the
# partial writes and the reduction of shorter ones cost more than the wave they fill.
MIN_BALANCING_SPLIT_TOKENS = 1024
# Registers per thread of an fp8 launch: 4 programs of 4 warps in an SM's 65,536 (default_config).
FP8_MAX_REGISTERS = 128
# A grid over several waves is split until its last wave is at least this full.
LAST_WAVE_FILL = 0.9


@dataclass(frozen=True)
class DecodeConfig:
    """Launch shape of the split kernel: tokens per tile, warps, software-pipelining depth, and
    a cap on registers per thread (None: the compiler's choice), which trades spills for more
    programs per SM."""

    block_n: int
    num_warps: int
    num_stages: int
    maxnreg: int | None = None

    def options(self) -> dict:
        """The launch options Triton compiles this shape with."""
        options = dict(num_warps=self.num_warps, num_stages=self.num_stages)
        if self.maxnreg is not None:
            options["maxnreg"] = self.maxnreg
        return options


def default_config(block_size: int, num_splits: int, max_context: int = 0,
                   fp8: bool = False) -> DecodeConfig:
    """Launch shape measured best on an H100 (benchmarks/results/tuning/paged_decode_tune_h100.csv,
    and paged_decode_tune_splits_h100.csv for split launches).

    TILE_TOKENS-token tiles, 2 stages: more bytes in flight per program, which pays wherever a
    program looks up every token (block_size 1: 64x4096 in 372 us against 463 with 64-token
    tiles) and wherever few programs share a small context (split-KV). Over blocks that hold
    whole SHORT_TILE_TOKENS-token tiles (one table lookup per tile), unsplit large batches run
    best with those tiles and 3 stages (64x32768 at block_size 256: 2822 us against 3022), and
    splits of one such tile, which have nothing to pipeline, with one stage (1x4096 at
    block_size 64 and 256: 17.7 us, against 18.0-18.2 with two stages).

    Over an fp8 cache (measured on an H200, benchmarks/results/tuning/
    paged_decode_fp8_tune_transposed_v_h200.csv) every launch that is not a split of one short
    tile takes TILE_TOKENS-token tiles, 2 stages and at most FP8_MAX_REGISTERS registers a
    thread, so that 4 programs fit an SM: the compiler's 210-222 leave room for 2, too few to
    keep an fp8 loop's loads in flight. The registers it spills under the cap are spilled
    outside the tile loop (around the last tile's step), and on the tuned shapes the cap gave
    1.27-1.83x bf16's tokens per second against 1.18-1.56x under a cap of 168 (3 programs)
    and 1.12-1.37x uncapped; 3 stages under the cap spill inside the loop and lose. On V in runs
    of 16 tokens, 64-token tiles (2 or 3 stages), 8 warps, and 256-token tiles over 8 warps were
    all slower than this launch on the shapes furthest from 1.7x (tuning/
    paged_decode_fp8_tune_tiles_h200.csv, paged_decode_fp8_tune_tiles256_h200.csv).
    """
    if block_size % SHORT_TILE_TOKENS == 0:
        if num_splits == 1 and not fp8:
            return DecodeConfig(block_n=SHORT_TILE_TOKENS, num_warps=4, num_stages=3)
        if 0 < max_context <= num_splits * SHORT_TILE_TOKENS:
            return DecodeConfig(block_n=SHORT_TILE_TOKENS, num_warps=4, num_stages=1)
    if fp8:
        return DecodeConfig(block_n=TILE_TOKENS, num_warps=4, num_stages=2,
                            maxnreg=FP8_MAX_REGISTERS)
    return DecodeConfig(block_n=TILE_TOKENS, num_warps=4, num_stages=2)


def choose_num_splits(batch: int, num_kv_heads: int, max_context: int, num_sms: int, *,
                      block_size: int = 1,
                      programs_per_sm: Callable[[int], int] | None = None) -> int:
    """Split count that fills the GPU in whole waves, for default_config's launch shapes;
    programs_per_sm(splits) is how many programs of that launch one SM holds (plan_launch reads
    it off the compiled kernels; without it, 2, the fewest any default launch gets on an H100).

    Measured on an H100 (benchmarks/results/tuning/paged_decode_tune_splits_h100.csv). A grid that
    fits in one wave takes as many splits as still fit, each at least a tile:
    more programs put more loads in flight (1x4096 at block_size 64: 17.7 us with 64 splits of
    one 64-token tile, 18.9 with 32 of two). A larger grid is split only until its last wave is
    LAST_WAVE_FILL full, since a nearly empty last wave leaves SMs idle while it drains
    (64x32768 at block_size 16, 3 programs per SM: 1.29 waves unsplit at 91% of SDPA, 3.88
    waves with 3 splits at 97%); such splits stay MIN_BALANCING_SPLIT_TOKENS long.
    """
    programs = batch * num_kv_heads
    per_sm = programs_per_sm or (lambda splits: 2)
    if programs <= per_sm(1) * num_sms:
        short_tiles = -(-max_context // SHORT_TILE_TOKENS)
        if (block_size % SHORT_TILE_TOKENS == 0 and 1 < short_tiles <= MAX_SPLITS
                and programs * short_tiles <= per_sm(short_tiles) * num_sms):
            return short_tiles
        tiles = -(-max_context // TILE_TOKENS)
        most = max((splits for splits in range(1, min(MAX_SPLITS, tiles) + 1)
                    if programs * splits <= per_sm(splits) * num_sms), default=1)
        # The fewest splits of the length that `most` gives: none of them left empty.
        return 1 if most == 1 else -(-tiles // -(-tiles // most))
    best, best_fill = 1, 0.0
    for splits in range(1, min(MAX_SPLITS, max_context // MIN_BALANCING_SPLIT_TOKENS) + 1):
        waves = programs * splits / (per_sm(splits) * num_sms)
        fill = waves / math.ceil(waves)
        if fill >= LAST_WAVE_FILL:
            return splits
        if fill > best_fill:
            best, best_fill = splits, fill
    return best


# kernels/fp8_decode.py's split counts for a grid of one wave, measured on an H200 (benchmarks/
# probe_fp8_splits.py, results/tuning/paged_decode_fp8_splits_h200.csv, 1-64 splits of seven
# shapes at block sizes 16 and 64): that kernel runs fastest at about FP8_PROGRAMS_PER_SM
# programs an SM, and splits that would fill every slot of the wave (choose_num_splits) only
# pay where each still holds FP8_LONG_SPLIT_TOKENS: 32 x 4096 took 84.4 us unsplit against
# 87.6 in 2 splits, 32 x 32768 517.0 in 2 against 534.8 unsplit (block size 16).
FP8_PROGRAMS_PER_SM = 2
FP8_MIN_SPLIT_TOKENS = 256  # 1 x 4096: 15.1 us in 16 splits, 17.0 in 32 of 128 tokens
FP8_LONG_SPLIT_TOKENS = 8192


def choose_fp8_num_splits(batch: int, num_kv_heads: int, max_context: int, num_sms: int,
                          programs_per_sm: int) -> int:
    """Split count of kernels/fp8_decode.py's launch, programs_per_sm of which one SM holds: a
    grid larger than a wave is balanced as choose_num_splits balances it; a smaller one is
    split in two while it stays within FP8_PROGRAMS_PER_SM programs an SM and splits of at
    least FP8_MIN_SPLIT_TOKENS, then while it stays within the wave and splits of at least
    FP8_LONG_SPLIT_TOKENS."""
    programs = batch * num_kv_heads
    if programs > programs_per_sm * num_sms:
        return choose_num_splits(batch, num_kv_heads, max_context, num_sms,
                                 programs_per_sm=lambda splits: programs_per_sm)
    splits = 1
    for per_sm, min_tokens in ((FP8_PROGRAMS_PER_SM, FP8_MIN_SPLIT_TOKENS),
                               (programs_per_sm, FP8_LONG_SPLIT_TOKENS)):
        while (2 * splits <= MAX_SPLITS and programs * 2 * splits <= per_sm * num_sms
               and max_context // (2 * splits) >= min_tokens):
            splits *= 2
    return splits
