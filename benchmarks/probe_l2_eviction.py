"""GPU probe: what the L2 eviction before each timed call adds to the time. bench_paged_decode.
time_us evicts by reading 256 MB (evict_l2); triton.testing.do_bench zeroes a 256 MB buffer,
whose dirty lines L2 writes back while the next call reads. Times, with each eviction and with
none: a sum over 16, 64 and 256 MB (bytes read, nothing written), and the bf16 and fp8 decode
kernels' default launches on shapes of the fp8 table (bench_paged_decode_fp8.py). Writes
l2_eviction_<gpu>.csv:

    PYTHONPATH=.:benchmarks python benchmarks/probe_l2_eviction.py --out OUT
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

import torch

from bench_paged_decode import EVICT_BYTES, device_slug, evict_l2, make_case, shapes, time_us
from bench_paged_decode_fp8 import LAYOUT, Fp8Case, bf16_call, write_csv

COLUMNS = ["what", "bytes_read", "eviction", "median_us"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results/tuning"))
    parser.add_argument("--shapes", type=shapes, default=shapes("32x4096,8x4096,32x32768"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    written = torch.empty(EVICT_BYTES // 4, dtype=torch.int32, device="cuda")
    evictions = {"read (time_us)": evict_l2, "write (do_bench)": written.zero_,
                 "none": lambda: None}
    rows = []

    def time_each(what: str, nbytes: int, call) -> None:
        for name, evict in evictions.items():
            rows.append(dict(what=what, bytes_read=nbytes, eviction=name,
                             median_us=round(time_us(call, evict=evict), 2)))
            print(rows[-1], flush=True)

    total = torch.empty((), dtype=torch.float32, device="cuda")
    for mb in (16, 64, 256):
        data = torch.ones(mb << 19, dtype=torch.bfloat16, device="cuda")
        time_each(f"sum of {mb} MB", data.numel() * 2,
                  functools.partial(torch.sum, data, dim=0, dtype=torch.float32, out=total))
    for batch, context in args.shapes:
        case = make_case(batch, context, seed=batch * 100003 + context)
        quantized = Fp8Case(case)
        for block_size in (16, 64):
            tables = case.block_tables(block_size, LAYOUT, seed=block_size)
            for dtype, call, nbytes in (
                    ("bf16", bf16_call(case, block_size, tables), case.kv_bytes),
                    ("fp8", quantized.call(block_size, tables), case.kv_bytes // 2)):
                time_each(f"{dtype} decode {batch}x{context} bs {block_size}", nbytes, call)
        del case, quantized
        torch.cuda.empty_cache()
    write_csv(os.path.join(args.out, f"l2_eviction_{device_slug()}.csv"), rows, COLUMNS, [
        "bytes_read: what the timed call reads; eviction: what ran before each timed call "
        f"(read: a sum over {EVICT_BYTES >> 20} MB; write: zeroing {EVICT_BYTES >> 20} MB)",
        "decode: paged_decode's default launch (bench_paged_decode_fp8.py's cases)"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
