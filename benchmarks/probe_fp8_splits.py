"""GPU probe: the launch shape of kernels/fp8_decode.py. paged_decode's fp8 path at 1-64 splits
a sequence and KV head, each with 3, 4 and 6 shared-memory buffers a program (each launch
combined by kernels/split_kv.py's reduce kernel, and checked against the references over the
dequantized fp8 cache and the bf16 one), beside its default launch and the bf16 kernel's, on
the shapes of the fp8 table (bench_paged_decode_fp8.py): what choose_num_splits and the buffer
count should be for this kernel. Writes paged_decode_fp8_splits_<gpu>.csv:

    PYTHONPATH=.:benchmarks python benchmarks/probe_fp8_splits.py --out OUT
"""
from __future__ import annotations

import sys

import torch

from bench_paged_decode_fp8 import Fp8Case, probe_main
from kernels import fp8_decode

SPLITS = (1, 2, 4, 8, 16, 32, 64)
STAGES = (3, 4, 6)


def at_stages(stages: int, call):
    """call with its fp8_decode launch planned afresh at `stages` buffers."""
    def run():
        saved = fp8_decode.STAGES
        fp8_decode.STAGES = stages
        fp8_decode._LAUNCHES.clear()
        try:
            return call()
        finally:
            fp8_decode.STAGES = saved
            fp8_decode._LAUNCHES.clear()
    return run


def variants(quantized: Fp8Case, block_size: int, tables: torch.Tensor, out: torch.Tensor):
    """The fp8 launch at each of SPLITS (as many as the context has 64-token tiles) and each
    of STAGES."""
    tiles = -(-quantized.case.context // 64)
    return [(f"splits {splits} stages {stages}", splits,
             at_stages(stages, quantized.call(block_size, tables, num_splits=splits)), True)
            for splits in SPLITS if splits <= tiles for stages in STAGES]


def main() -> int:
    return probe_main(
        __doc__.splitlines()[0],
        "1x4096,8x4096,32x4096,64x4096,1x32768,8x32768,32x32768",
        "paged_decode_fp8_splits", [
            "fp8 (committed): paged_decode's default fp8 launch (kernels/fp8_decode.py's "
            "launch_for); splits N stages S: the same kernel at N splits and S buffers",
            "rel_*: relative error of the first sequences' outputs against the reference over "
            "the dequantized fp8 cache and over the bf16 cache"], variants)


if __name__ == "__main__":
    sys.exit(main())
