"""GPU probe: the attention of a small mixed step (a few decode rows and one prefill chunk), per
layer, as a captured graph runs it: the decode launch then the prefill launch (the executor's
order until commit a9fa248), the prefill launch at other split counts, and both launches side by
side on two streams of the graph, either launched first (the executor's: prefill first), the
decode launch at other split counts and the prefill launch at smaller launch shapes too. Which
of these sets the time of the Azure run's mixed steps of at most 256 tokens
(benchmarks/results/gpu_steps_<gpu>.csv), where the tokens' GEMMs are at their floor.

Each shape runs 32 layers (llama3-8b heads, bfloat16, block size 16, block tables 16,384 tokens
wide as the executor's graphs have them, each layer its own KV) in one CUDA graph, timed as
bench_paged_decode times (median of replays, L2 evicted before each); printed and written to
--out as mixed_attention.csv, per layer.

    PYTHONPATH=. python benchmarks/probe_mixed_attention.py --out "$OUT"
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd
import torch

from bench_paged_decode import time_us
from harness.gpu.attention import TritonAttention
from kernels.paged_decode import paged_decode
from kernels.paged_prefill import paged_prefill
from kernels.prefill_launch import PrefillConfig
from kernels.segments import segment_table

LAYERS, HEADS, KV_HEADS, DIM, BLOCK, WIDTH = 32, 32, 8, 128, 16, 1024
DECODE_CONTEXT = 1500
# decode rows, prefill tokens, prefill context before them (0: a fresh prompt), padded tokens
SHAPES = ((8, 96, 0, 128), (16, 200, 0, 224), (32, 200, 0, 256), (16, 200, 2000, 224),
          (44, 2, 1000, 64), (4, 240, 0, 256))


# Prefill launch shapes (block_m:block_n:warps:stages) that take less shared memory than the
# default's, leaving room on an SM for the decode programs beside them.
PREFILL_CONFIGS = (PrefillConfig(64, 32, 4, 2), PrefillConfig(64, 64, 4, 2),
                   PrefillConfig(128, 32, 4, 2), PrefillConfig(128, 64, 8, 2))


def pad_rows(rows: int) -> int:
    return 1 << (rows - 1).bit_length()


class Layer:
    """One layer's KV, block tables, queries and output for a shape."""

    def __init__(self, decode: int, tokens: int, context: int, padded: int, gen) -> None:
        rows = pad_rows(decode)
        need = decode * -(-DECODE_CONTEXT // BLOCK) + -(-(context + tokens) // BLOCK)
        self.k = torch.randn(need, BLOCK, KV_HEADS, DIM, generator=gen, device="cuda",
                             dtype=torch.bfloat16)
        self.v = torch.randn_like(self.k)
        self.table = segment_table([self.k], [self.v])
        order = torch.randperm(need, generator=gen, device="cuda").to(torch.int32)
        per = -(-DECODE_CONTEXT // BLOCK)
        self.decode_tables = torch.zeros(rows, WIDTH, dtype=torch.int32, device="cuda")
        for r in range(decode):
            self.decode_tables[rows - decode + r, :per] = order[r * per:(r + 1) * per]
        self.decode_lens = torch.zeros(rows, dtype=torch.int32, device="cuda")
        self.decode_lens[rows - decode:] = DECODE_CONTEXT
        self.prefill_tables = torch.zeros(1, WIDTH, dtype=torch.int32, device="cuda")
        mine = order[decode * per:]
        self.prefill_tables[0, :mine.numel()] = mine
        self.starts = torch.tensor([0, tokens], dtype=torch.int32, device="cuda")
        self.context = torch.tensor([context + tokens], dtype=torch.int32, device="cuda")
        self.q = torch.randn(padded, HEADS, DIM, generator=gen, device="cuda",
                             dtype=torch.bfloat16)
        self.out = torch.empty_like(self.q)
        self.rows, self.blocks = rows, need

    def decode(self, splits: int) -> None:
        first = self.q.shape[0] - self.rows
        paged_decode(self.q[first:], None, None, self.decode_tables, self.decode_lens, self.blocks,
                     num_splits=splits, table=self.table, out=self.out[first:])

    def prefill(self, splits: int | None, config: PrefillConfig | None = None) -> None:
        paged_prefill(self.q, None, None, self.prefill_tables, self.starts, self.context,
                      self.blocks, table=self.table, out=self.out, num_splits=splits,
                      config=config)


def variants(layers: list[Layer], decode_splits: int):
    side = torch.cuda.Stream()

    def serial(splits):
        def run():
            for layer in layers:
                layer.decode(decode_splits)
                layer.prefill(splits)
        return run

    def streams(splits, prefill_first=False, decode=decode_splits, config=None):
        def run():
            main = torch.cuda.current_stream()
            for layer in layers:
                side.wait_stream(main)
                if not prefill_first:
                    layer.decode(decode)
                with torch.cuda.stream(side):
                    layer.prefill(splits, config)
                if prefill_first:
                    layer.decode(decode)
                main.wait_stream(side)
        return run

    def decode_only(splits):
        return lambda: [layer.decode(splits) for layer in layers]

    yield "decode only", decode_only(decode_splits)
    yield "prefill only", lambda: [layer.prefill(None) for layer in layers]
    yield "serial", serial(None)
    for splits in (1, 2, 4, 8):
        yield f"serial, prefill splits {splits}", serial(splits)
    yield "two streams", streams(None)
    yield "two streams, prefill splits 1", streams(1)
    yield "two streams, prefill launched first", streams(None, prefill_first=True)
    for config in PREFILL_CONFIGS:
        text = f"{config.block_m}:{config.block_n}:{config.num_warps}:{config.num_stages}"
        yield f"prefill only, prefill config {text}", \
            lambda config=config: [layer.prefill(None, config) for layer in layers]
        yield (f"two streams, prefill launched first, prefill config {text}",
               streams(None, prefill_first=True, config=config))
    for splits in (1, 2, 4, 8, 16):
        if splits != decode_splits:
            yield f"decode only, decode splits {splits}", decode_only(splits)
            yield (f"two streams, prefill launched first, decode splits {splits}",
                   streams(None, prefill_first=True, decode=splits))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    backend = TritonAttention(decode_balance="off")
    rows = []
    for decode, tokens, context, padded in SHAPES:
        layers = [Layer(decode, tokens, context, padded, gen) for _ in range(LAYERS)]
        first = layers[0]
        decode_splits = backend.num_splits(first.q[:first.rows], first.table,
                                           first.decode_tables, None)
        for name, fn in variants(layers, decode_splits):
            us = time_us(fn) / LAYERS
            rows.append(dict(decode=decode, prefill_tokens=tokens, prefill_context=context,
                             padded_tokens=padded, decode_splits=decode_splits, variant=name,
                             us_per_layer=us))
            print(f"decode {decode:2d} prefill {tokens:3d} after {context:4d} (T {padded}, "
                  f"decode splits {decode_splits}): {name:32s} {us:7.2f} us/layer", flush=True)
        del layers
        torch.cuda.empty_cache()
    pd.DataFrame(rows).to_csv(args.out / "mixed_attention.csv", index=False,
                              float_format="%.6g")
    return 0


if __name__ == "__main__":
    sys.exit(main())
