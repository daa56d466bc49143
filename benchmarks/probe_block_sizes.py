"""GPU probe: paged_decode at the executor's decode shapes over every block size the allocators
use, against SDPA on a contiguous cache. Each sequence holds 1,500 tokens (about the Azure
slice's) laid out in order, as segmented lays a sequence out, in block tables that span 8,192
tokens (a llama3-8b graph's); the kernel chooses its own split count. Allocators of one batch
should time alike whatever their block size: this is where a difference would show.

    PYTHONPATH=. python benchmarks/probe_block_sizes.py --out OUT

writes block_sizes_<gpu>.csv (batch, context, block_size, num_splits, median_us, sdpa_us,
ratio = median_us / sdpa_us, max_abs_diff against the block-size-16 output).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import torch
import torch.nn.functional as F

from bench_paged_decode import device_slug, header, time_us
from kernels.paged_decode import paged_decode, plan_launch
from kernels.segments import segment_table

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
SPAN, CONTEXT, SEGMENT_TOKENS = 8192, 1500, 65536
# Sequence i starts at token i * STRIDE of the pool: a multiple of every block size probed.
STRIDE = 1536
BATCHES = (1, 8, 32, 48, 64, 128)
BLOCK_SIZES = (16, 1, 256)
COLUMNS = ["batch", "context", "block_size", "num_splits", "median_us", "sdpa_us", "ratio",
           "max_abs_diff"]


def tables_for(batch: int, block_size: int) -> torch.Tensor:
    """Block tables spanning SPAN tokens, sequence i's CONTEXT tokens from token i * STRIDE."""
    tables = torch.zeros(batch, SPAN // block_size, dtype=torch.int32)
    blocks = -(-CONTEXT // block_size)
    for i in range(batch):
        first = i * STRIDE // block_size
        tables[i, :blocks] = torch.arange(first, first + blocks, dtype=torch.int32)
    return tables.cuda()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    tokens = -(-max(BATCHES) * STRIDE // SEGMENT_TOKENS) * SEGMENT_TOKENS
    pool_k, pool_v = (torch.randn(tokens, KV_HEADS, HEAD_DIM, generator=gen, device="cuda",
                                  dtype=torch.bfloat16) for _ in range(2))
    rows = []
    for batch in BATCHES:
        q = torch.randn(batch, HEADS, HEAD_DIM, generator=gen, device="cuda",
                        dtype=torch.bfloat16)
        lens = torch.full((batch,), CONTEXT, dtype=torch.int32, device="cuda")
        starts = torch.arange(batch, device="cuda") * STRIDE
        rows_of = starts[:, None] + torch.arange(CONTEXT, device="cuda")
        k, v = (p[rows_of].transpose(1, 2).contiguous() for p in (pool_k, pool_v))
        sdpa_us = time_us(lambda: F.scaled_dot_product_attention(q[:, :, None], k, v,
                                                                  enable_gqa=True))
        base = None
        for block_size in BLOCK_SIZES:
            shape = (-1, SEGMENT_TOKENS // block_size, block_size, KV_HEADS, HEAD_DIM)
            table = segment_table(list(pool_k.view(shape).unbind(0)),
                                  list(pool_v.view(shape).unbind(0)))
            tables = tables_for(batch, block_size)
            bps = SEGMENT_TOKENS // block_size

            def call(tables=tables, table=table, bps=bps):
                return paged_decode(q, None, None, tables, lens, bps, table=table)

            out = call()
            base = out if base is None else base
            us = time_us(call)
            rows.append(dict(batch=batch, context=CONTEXT, block_size=block_size,
                             num_splits=plan_launch(q, table, tables).num_splits,
                             median_us=round(us, 2), sdpa_us=round(sdpa_us, 2),
                             ratio=round(us / sdpa_us, 4),
                             max_abs_diff=f"{(out.float() - base.float()).abs().max().item():.2e}"))
            print(", ".join(f"{k} {v}" for k, v in rows[-1].items()), flush=True)
    path = os.path.join(args.out, f"block_sizes_{device_slug()}.csv")
    with open(path, "w", newline="") as fh:
        fh.write("\n".join(header() + [
            "# command: PYTHONPATH=. python benchmarks/probe_block_sizes.py --out OUT",
            f"# setup: llama3-8b heads ({HEADS} q, {KV_HEADS} kv, dim {HEAD_DIM}) bf16; context "
            f"{CONTEXT} per sequence, in order; block tables spanning {SPAN} tokens; the default "
            "launch; time_us: CUDA graph replays, L2 flushed"]) + "\n")
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
