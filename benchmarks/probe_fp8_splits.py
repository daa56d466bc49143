"""GPU probe: the launch shape of kernels/fp8_decode.py. paged_decode's fp8 path at 1-64 splits
a sequence and KV head, each at the LAUNCHES' warps and shared-memory buffers a program (each
launch combined by kernels/split_kv.py's reduce kernel, and checked against the references over
the dequantized fp8 cache and the bf16 one), beside its default launch and the bf16 kernel's,
on the shapes of the fp8 table (bench_paged_decode_fp8.py): what choose_num_splits, the warps
and the buffer count should be for this kernel. Writes paged_decode_fp8_splits_<gpu>.csv:

    PYTHONPATH=.:benchmarks python benchmarks/probe_fp8_splits.py --out OUT

The committed table came from the probe at commit 3799ba6 (the split step of bash
benchmarks/sweeps/fp8_splits.sh); the one before it, of 4 warps with 3, 4 and 6 buffers (commit
55ade20), is in git history.
"""
from __future__ import annotations

import sys

import torch

from bench_paged_decode_fp8 import Fp8Case, probe_main
from kernels import fp8_decode

SPLITS = (1, 2, 4, 8, 16, 32, 64)
# (warps, buffers) a program: the committed launch, and 8 warps (each its own 16 tokens of a
# 128-token tile), whose registers allow 2 programs an SM, at 2 and 3 buffers.
LAUNCHES = ((4, 3), (8, 2), (8, 3))


def launched_as(warps: int, stages: int, call):
    """call with its fp8_decode launch planned afresh at `warps` warps and `stages` buffers."""
    def run():
        saved = fp8_decode.WARPS, fp8_decode.STAGES
        fp8_decode.WARPS, fp8_decode.STAGES = warps, stages
        fp8_decode._LAUNCHES.clear()
        try:
            return call()
        finally:
            fp8_decode.WARPS, fp8_decode.STAGES = saved
            fp8_decode._LAUNCHES.clear()
    return run


def variants(quantized: Fp8Case, block_size: int, tables: torch.Tensor, out: torch.Tensor):
    """The fp8 launch at each of SPLITS (at most one a tile of the context) and LAUNCHES."""
    return [(f"splits {splits} warps {warps} stages {stages}", splits,
             launched_as(warps, stages,
                         quantized.call(block_size, tables, num_splits=splits)), True)
            for warps, stages in LAUNCHES for splits in SPLITS
            if splits * 16 * warps <= quantized.case.context]


def main() -> int:
    return probe_main(
        __doc__.splitlines()[0],
        "1x4096,8x4096,32x4096,64x4096,1x32768,8x32768,32x32768",
        "paged_decode_fp8_splits", [
            "fp8 (committed): paged_decode's default fp8 launch (kernels/fp8_decode.py's "
            "launch_for); splits N warps W stages S: the same kernel at N splits, W warps and "
            "S buffers",
            "rel_*: relative error of the first sequences' outputs against the reference over "
            "the dequantized fp8 cache and over the bf16 cache"], variants)


if __name__ == "__main__":
    sys.exit(main())
