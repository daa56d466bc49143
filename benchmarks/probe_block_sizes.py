"""GPU probe: paged_decode and its balanced form (the executor's: a work list per step) at the
executor's decode shapes over every block size the allocators use, against SDPA on a contiguous
cache. Each sequence holds 1,500 tokens (about the Azure slice's; 400 too at one sequence, its
first steps) laid out in order, as segmented lays a sequence out, in block tables that span
8,192 tokens (a llama3-8b graph's); paged_decode chooses its own split count, the balanced
kernel takes plan_work_lists' programs. Allocators of one batch should time alike whatever
their block size: this is where a difference would show.

    PYTHONPATH=. python benchmarks/probe_block_sizes.py --out OUT

writes block_sizes_<gpu>.csv (batch, context, block_size, num_splits, median_us, balanced_us,
sdpa_us, ratio = median_us / sdpa_us, balanced_ratio = balanced_us / sdpa_us, max_abs_diff of
either against the block-size-16 paged_decode output).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import torch
import torch.nn.functional as F

from bench_paged_decode import device_slug, header, time_us
from kernels.balanced_decode import paged_decode_balanced, plan_work_lists
from kernels.paged_decode import DecodeShape, paged_decode, plan_launch
from kernels.segments import segment_table
from kernels.work_list import DecodeWorkList

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
SPAN, CONTEXT, SEGMENT_TOKENS = 8192, 1500, 65536
SHORT_CONTEXT = 400  # the Azure run's first steps: one sequence of about 400 tokens
# Sequence i starts at token i * STRIDE of the pool: a multiple of every block size probed.
STRIDE = 1536
BATCHES = (1, 8, 32, 48, 64, 128)
BLOCK_SIZES = (16, 1, 256)
COLUMNS = ["batch", "context", "block_size", "num_splits", "median_us", "balanced_us", "sdpa_us",
           "ratio", "balanced_ratio", "max_abs_diff"]


def tables_for(batch: int, block_size: int, context: int) -> torch.Tensor:
    """Block tables spanning SPAN tokens, sequence i's context tokens from token i * STRIDE."""
    tables = torch.zeros(batch, SPAN // block_size, dtype=torch.int32)
    blocks = -(-context // block_size)
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
    for batch, context in [(1, SHORT_CONTEXT)] + [(b, CONTEXT) for b in BATCHES]:
        q = torch.randn(batch, HEADS, HEAD_DIM, generator=gen, device="cuda",
                        dtype=torch.bfloat16)
        lens = torch.full((batch,), context, dtype=torch.int32, device="cuda")
        starts = torch.arange(batch, device="cuda") * STRIDE
        rows_of = starts[:, None] + torch.arange(context, device="cuda")
        k, v = (p[rows_of].transpose(1, 2).contiguous() for p in (pool_k, pool_v))
        sdpa_us = time_us(lambda: F.scaled_dot_product_attention(q[:, :, None], k, v,
                                                                  enable_gqa=True))
        base = None
        for block_size in BLOCK_SIZES:
            shape = (-1, SEGMENT_TOKENS // block_size, block_size, KV_HEADS, HEAD_DIM)
            table = segment_table(list(pool_k.view(shape).unbind(0)),
                                  list(pool_v.view(shape).unbind(0)))
            tables = tables_for(batch, block_size, context)
            bps = SEGMENT_TOKENS // block_size
            plan = plan_work_lists(DecodeShape.of(q, table, tables))
            work = DecodeWorkList(plan, batch, torch.from_numpy(
                plan.build(lens.cpu().numpy())).cuda())

            def call(tables=tables, table=table, bps=bps):
                return paged_decode(q, None, None, tables, lens, bps, table=table)

            def balanced(tables=tables, table=table, bps=bps, work=work):
                return paged_decode_balanced(q, None, None, tables, work, bps, table=table)

            out = call()
            base = out if base is None else base
            diff = max((o.float() - base.float()).abs().max().item() for o in (out, balanced()))
            us, balanced_us = time_us(call), time_us(balanced)
            rows.append(dict(batch=batch, context=context, block_size=block_size,
                             num_splits=plan_launch(q, table, tables).num_splits,
                             median_us=round(us, 2), balanced_us=round(balanced_us, 2),
                             sdpa_us=round(sdpa_us, 2), ratio=round(us / sdpa_us, 4),
                             balanced_ratio=round(balanced_us / sdpa_us, 4),
                             max_abs_diff=f"{diff:.2e}"))
            print(", ".join(f"{k} {v}" for k, v in rows[-1].items()), flush=True)
    path = os.path.join(args.out, f"block_sizes_{device_slug()}.csv")
    with open(path, "w", newline="") as fh:
        fh.write("\n".join(header() + [
            "# command: PYTHONPATH=. python benchmarks/probe_block_sizes.py --out OUT",
            f"# setup: llama3-8b heads ({HEADS} q, {KV_HEADS} kv, dim {HEAD_DIM}) bf16; context "
            f"{CONTEXT} per sequence ({SHORT_CONTEXT} too at one), in order; block tables "
            f"spanning {SPAN} tokens; paged_decode's default launch, and the balanced kernel "
            "over plan_work_lists' programs; time_us: CUDA graph replays, L2 evicted"]) + "\n")
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
