"""GPU benchmark of paged decode over an fp8 (e4m3) KV cache against the same kernel over bf16.

For every batch x context x block size: bench_paged_decode's bf16 pool (llama3-8b heads, the same
seeds and shuffled block tables), and its fp8 copy, written through kernels.kv_write.write_kv
with per-head scales calibrated on the pool itself (kernels.fp8.kv_scales, amax / 448). Both are
timed with kernels.paged_decode's default launch (CUDA-graph replays, median, L2 evicted before
each) and written side by side to paged_decode_fp8_<device>.csv: bench_paged_decode's columns
plus kv_dtype. kv_bytes is what the kernel reads (half for fp8); max_abs_err is against the
float32 reference over the bf16 pool for both rows, so for fp8 it is the price of quantizing.
Every fp8 output is also checked against the reference over the dequantized pool (the kernel's
own exactness), and a relative error above 1e-2 there fails the run. Prints, per shape, the
tokens of context per second of fp8 over bf16 (bf16 time / fp8 time). `--tune-configs` times
other fp8 launch shapes (at `--tune-splits` split counts) on a few shapes instead (printed and written to
paged_decode_fp8_tune_<device>.csv). The committed table came from (on the GPU machine):

    PYTHONPATH=. python benchmarks/bench_paged_decode_fp8.py --out benchmarks/results
"""
from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
from typing import Callable

import torch

from bench_paged_decode import (
    COLUMNS,
    CHECKED_SEQS,
    Case,
    configs,
    config_text,
    copy_bandwidth_gbs,
    device_slug,
    fits,
    header,
    ints,
    make_case,
    max_abs_err,
    shapes,
    time_us,
)
from kernels.fp8 import FP8_DTYPE, kv_scales
from kernels.kv_write import write_kv
from kernels.paged_decode import paged_decode, plan_launch
from kernels.reference import reference_decode
from kernels.segments import segment_table, value_shape

FP8_COLUMNS = COLUMNS + ["kv_dtype"]
# The done-when check: fp8 moves this many times the tokens of context per second of bf16 on
# every shape of at least TARGET_TOKENS tokens in all.
TARGET_RATIO = 1.7
TARGET_TOKENS = 65536
LAYOUT = "shuffled"


class Fp8Case:
    """The fp8 copy of a bf16 Case: its pool quantized through write_kv, and the scales. An fp8
    cache holds V transposed in runs of tokens (kernels/segments.py), so unlike the bf16 pool its
    bytes depend on the block size: segments() writes it again for each."""

    def __init__(self, case: Case):
        self.case = case
        self.k_scale = kv_scales(case.pool_k, per_head=True)
        self.v_scale = kv_scales(case.pool_v, per_head=True)
        self.fp8 = Case(case.batch, case.context, case.q,
                        torch.empty_like(case.pool_k, dtype=FP8_DTYPE),
                        torch.empty_like(case.pool_v, dtype=FP8_DTYPE))
        self._written = None  # the block size the fp8 pool holds its tokens at

    def segments(self, block_size: int):
        """The fp8 pool's segment lists at block_size (written at it first if need be)."""
        k_segs, v_segs, bps = self.fp8.segments(block_size)
        v_segs = [v.view(value_shape(tuple(v.shape), FP8_DTYPE)) for v in v_segs]
        if self._written != block_size:
            slots = torch.arange(self.case.pool_k.shape[0], device=self.case.q.device)
            write_kv(self.case.pool_k, self.case.pool_v, k_segs, v_segs, slots, block_size, bps,
                     k_scale=self.k_scale, v_scale=self.v_scale)
            self._written = block_size
        return k_segs, v_segs, bps

    def call(self, block_size: int, tables: torch.Tensor, config=None, num_splits=None):
        k_segs, v_segs, bps = self.segments(block_size)
        table = segment_table(k_segs, v_segs)
        lens = self.case.context_lens()
        return lambda: paged_decode(self.case.q, None, None, tables, lens, bps, table=table,
                                    num_splits=num_splits, config=config, k_scale=self.k_scale,
                                    v_scale=self.v_scale)

    def dequantized_rel_err(self, out: torch.Tensor, block_size: int,
                            tables: torch.Tensor) -> float:
        """Relative error of the first sequences against the reference over the fp8 values."""
        n = min(self.case.batch, CHECKED_SEQS)
        k_segs, v_segs, bps = self.segments(block_size)
        ref = reference_decode(self.case.q[:n], k_segs, v_segs, tables[:n],
                               self.case.context_lens()[:n], bps, k_scale=self.k_scale,
                               v_scale=self.v_scale)
        diff = out[:n].float() - ref
        return (diff.norm() / ref.norm()).item()


def bf16_call(case: Case, block_size: int, tables: torch.Tensor):
    k_segs, v_segs, bps = case.segments(block_size)
    table = segment_table(k_segs, v_segs)
    lens = case.context_lens()
    return lambda: paged_decode(case.q, None, None, tables, lens, bps, table=table)


def sweep(args, copy_gbs: float, path: str) -> tuple[list[dict], list[str], bool]:
    """Time every shape; the table at path is rewritten after each, so that a run cut short
    still leaves what it measured."""
    rows, notes, ok = [], [], True

    def add(case, block_size, kv_dtype, kv_bytes, us, abs_err):
        rows.append(dict(batch=case.batch, context=case.context, block_size=block_size,
                         layout=LAYOUT, impl="paged", median_us=round(us, 2), kv_bytes=kv_bytes,
                         bandwidth_gbs=round(kv_bytes / us / 1e3, 1),
                         copy_bandwidth_gbs=round(copy_gbs, 1), max_abs_err=f"{abs_err:.3g}",
                         kv_dtype=kv_dtype))

    for batch in args.batches:
        for context in args.contexts:
            if not fits(batch, context):
                notes.append(f"{batch}x{context}: skipped, does not fit in GPU memory")
                continue
            case = make_case(batch, context, seed=batch * 100003 + context)
            quantized = Fp8Case(case)
            for block_size in args.block_sizes:
                tables = case.block_tables(block_size, LAYOUT, seed=block_size)
                call = bf16_call(case, block_size, tables)
                bf16_us = time_us(call)
                bf16_err, _ = max_abs_err(case, call(), block_size, tables)
                add(case, block_size, "bf16", case.kv_bytes, bf16_us, bf16_err)
                call = quantized.call(block_size, tables)
                fp8_us = time_us(call)
                out = call()
                fp8_err, _ = max_abs_err(case, out, block_size, tables)
                exact = quantized.dequantized_rel_err(out, block_size, tables)
                add(case, block_size, "fp8", quantized.fp8.kv_bytes, fp8_us, fp8_err)
                splits = plan_launch(case.q, segment_table(*quantized.segments(block_size)[:2]),
                                     tables).num_splits
                print(f"B={batch:4d} T={context:6d} bs={block_size:3d}: bf16 {bf16_us:9.1f} us "
                      f"fp8 {fp8_us:9.1f} us ({splits} splits), tokens/s fp8/bf16 "
                      f"{bf16_us / fp8_us:.2f}; max abs err bf16 {bf16_err:.2g} fp8 "
                      f"{fp8_err:.2g}; fp8 vs dequantized rel {exact:.1e}", flush=True)
                if not exact < 1e-2:
                    ok = False
                    print(f"FAIL fp8 {batch}x{context} bs {block_size}: rel {exact:.2e} against "
                          "the dequantized reference")
            del case, quantized
            torch.cuda.empty_cache()
            write_csv(path, rows, FP8_COLUMNS, table_notes(rows, notes))
    return rows, notes, ok


def table_notes(rows: list[dict], notes: list[str]) -> list[str]:
    return [f"llama3-8b heads (32 q, 8 kv, dim 128), q bf16; {LAYOUT} block tables; fp8 pool "
            "written by write_kv with per-head scales amax / 448 of the pool; default launch",
            "max_abs_err: against the float32 reference over the bf16 pool (fp8 rows too)",
            target_note(rows)] + notes


def ratios(rows: list[dict]) -> list[tuple[dict, float]]:
    """Each fp8 row with its tokens-of-context-per-second ratio to the bf16 row of its shape."""
    bf16 = {(r["batch"], r["context"], r["block_size"]): r for r in rows if r["kv_dtype"] == "bf16"}
    return [(r, bf16[(r["batch"], r["context"], r["block_size"])]["median_us"] / r["median_us"])
            for r in rows if r["kv_dtype"] == "fp8"]


def target_note(rows: list[dict]) -> str:
    big = [(r, x) for r, x in ratios(rows) if r["batch"] * r["context"] >= TARGET_TOKENS]
    if not big:
        return "target: no shape of >= 64k tokens measured"
    worst_row, worst = min(big, key=lambda item: item[1])
    met = worst >= TARGET_RATIO
    return (f"target (fp8 >= {TARGET_RATIO}x the tokens of context per second of bf16 at >= "
            f"{TARGET_TOKENS} total tokens): {'met' if met else 'MISSED'}, worst "
            f"{worst:.2f}x at {worst_row['batch']}x{worst_row['context']} bs "
            f"{worst_row['block_size']}, best {max(x for _, x in big):.2f}x")


def write_csv(path: str, rows: list[dict], columns: list[str], notes: list[str]) -> None:
    command = "PYTHONPATH=. python " + " ".join(sys.argv)
    with open(path, "w", newline="") as fh:
        fh.write("\n".join(header() + [f"# command: {command}"] + [f"# note: {n}" for n in notes])
                 + "\n")
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def probe_main(description: str, default_shapes: str, name: str, notes: list[str],
               variants: Callable[[Fp8Case, int, torch.Tensor, torch.Tensor],
                                  list[tuple[str, int, Callable[[], torch.Tensor], bool]]]
               ) -> int:
    """The run the fp8 kernel probes share (benchmarks/probe_fp8_*.py): for every shape, at
    block sizes 16 and 64, the bf16 default launch, the committed fp8 launch and the probe's
    variants(quantized, block_size, tables, out), each a (label, split count, call, checked)
    whose call returns its output; timed, and where checked compared with the references over
    the dequantized fp8 cache and the bf16 one. Written to <name>_<gpu>.csv with the notes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results/tuning"))
    parser.add_argument("--shapes", type=shapes, default=shapes(default_shapes))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for batch, context in args.shapes:
        case = make_case(batch, context, seed=batch * 100003 + context)
        quantized = Fp8Case(case)
        out = torch.empty(case.q.shape, device=case.q.device, dtype=torch.float32)
        for block_size in (16, 64):
            tables = case.block_tables(block_size, LAYOUT, seed=block_size)
            bf16_us = time_us(bf16_call(case, block_size, tables))
            runs = [("fp8 (committed)", 0, quantized.call(block_size, tables), True)]
            for impl, splits, call, checked in runs + variants(quantized, block_size, tables, out):
                us = time_us(call)
                errs = ("", "")
                if checked:
                    result = call()
                    errs = (f"{quantized.dequantized_rel_err(result, block_size, tables):.2e}",
                            f"{max_abs_err(case, result, block_size, tables)[1]:.2e}")
                rows.append(dict(batch=batch, context=context, block_size=block_size,
                                 impl=impl, num_splits=splits, median_us=round(us, 2),
                                 ratio_to_bf16=round(bf16_us / us, 3),
                                 rel_dequantized=errs[0], rel_bf16=errs[1]))
                print(f"{batch}x{context} bs {block_size} {impl} splits {splits}: {us:.1f} us, "
                      f"{bf16_us / us:.2f}x bf16 {errs[0]}", flush=True)
        del case, quantized
        torch.cuda.empty_cache()
        write_csv(os.path.join(args.out, f"{name}_{device_slug()}.csv"), rows, list(rows[0]),
                  notes)
    return 0


def last_fp8_launch() -> tuple[int, int, int]:
    """Split count, registers per thread and spilled registers of the fp8 decode launch planned
    last."""
    from kernels import paged_decode
    launch = [launch for launch in paged_decode._LAUNCHES.values()
              if launch.plan.constexprs["KV_FP8"]][-1]
    compiled = [c for c, _ in launch.kernel._compiled.values()][-1]
    return launch.plan.num_splits, compiled.n_regs, compiled.n_spills


def tune(args) -> None:
    """Time fp8 launch shapes (and the bf16 default beside them) on a few shapes."""
    rows = []
    for batch, context in args.tune_shapes:
        case = make_case(batch, context, seed=batch * 100003 + context)
        quantized = Fp8Case(case)
        for block_size in args.block_sizes:
            tables = case.block_tables(block_size, LAYOUT, seed=block_size)
            bf16_us = time_us(bf16_call(case, block_size, tables))
            for config, num_splits in itertools.product(args.tune_configs, args.tune_splits):
                us = time_us(quantized.call(block_size, tables, config, num_splits or None))
                splits, regs, spills = last_fp8_launch()
                rows.append(dict(batch=batch, context=context, block_size=block_size,
                                 config=config_text(config), num_splits=splits,
                                 fp8_us=round(us, 2), bf16_us=round(bf16_us, 2),
                                 ratio=round(bf16_us / us, 3), registers=regs, spills=spills))
                print(f"tune B={batch} T={context} bs={block_size} fp8 {config_text(config)} "
                      f"splits {splits}: {us:.1f} us, bf16 default {bf16_us:.1f} us, ratio "
                      f"{bf16_us / us:.2f}, {regs} registers, {spills} spills", flush=True)
        del case, quantized
        torch.cuda.empty_cache()
    if rows:
        write_csv(os.path.join(args.out, f"paged_decode_fp8_tune_{device_slug()}.csv"), rows,
                  list(rows[0]), [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    parser.add_argument("--batches", type=ints, default=[1, 8, 32, 64, 128])
    parser.add_argument("--contexts", type=ints, default=[4096, 32768])
    parser.add_argument("--block-sizes", type=ints, default=[16, 64])
    parser.add_argument("--tune-configs", type=configs, default=None)
    parser.add_argument("--tune-splits", type=ints, default=[0],
                        help="split counts to tune at, 0 for paged_decode's choice")
    parser.add_argument("--tune-shapes", type=shapes, default=shapes("32x4096,8x32768,128x32768"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.tune_configs:
        tune(args)
        return 0
    copy_gbs = copy_bandwidth_gbs()
    print(f"copy bandwidth {copy_gbs:.0f} GB/s on {torch.cuda.get_device_name()}", flush=True)
    rows, notes, ok = sweep(args, copy_gbs,
                            os.path.join(args.out, f"paged_decode_fp8_{device_slug()}.csv"))
    for r, x in ratios(rows):
        print(f"{r['batch']:4d} x {r['context']:6d} bs {r['block_size']:3d}: fp8/bf16 tokens of "
              f"context per second {x:.2f}")
    print("\n".join(table_notes(rows, notes)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
