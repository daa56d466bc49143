"""GPU benchmark that decides `--decode-balance`: paged_decode's one split count per launch
against the balanced decode over a per-step work list (kernels/balanced_decode.py).

Llama-3-8B attention (32 query heads, 8 KV heads, head_dim 128), bf16, block size 16, block
tables 16,384 or 131,072 tokens wide (a decode graph's tables span the longest request of a
trace; `kvharness profile`'s span 128k), shuffled over one random pool in segments of 65,536
tokens. Batches 1, 8, 32, 64, 128 and 256 of uniform contexts (128, 1,000 or 8,192 tokens)
or skewed ones (one sequence of 8,192 or 65,536 tokens, the others 1,000). Each case times,
as CUDA-graph replays (bench_paged_decode.time_us: median, L2 evicted before each):

- split: paged_decode with its own split count (from the batch and the table width);
- executor: paged_decode with the split count the executor gives it today
  (harness.gpu.attention.TritonAttention.num_splits), timed apart only where it differs;
- balanced: paged_decode_balanced over the case's work list, one wave of persistent programs
  (plan_work_lists), what `--decode-balance on` runs; balanced_x2 with twice as many, to show
  whether a second wave pays;
- auto: what `--decode-balance auto` (the default) runs, balanced where the case's longest
  context is over three times the mean (harness.model.config.DECODE_BALANCE) and executor's
  launch elsewhere: that impl's row again;

checks every output against the float32 reference (rows 0, 1 and the last; row 0 is the long
one), and times building the work list on the host (build_us, the executor's staging cost).
Writes decode_balance_<gpu>.csv to --out and prints the verdict on the default, auto: at most
5% slower than executor on every case, at least 1.3x faster on the skewed cases taken together
(geometric mean), and every output within 1e-2 relative error of the reference. The same
checks of balanced (`on`) are printed beside them.

    PYTHONPATH=. python benchmarks/bench_decode_balance.py --out "$OUT"
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from bench_gpu_decode import write_csv
from bench_paged_decode import device_slug, header, time_us

from harness.gpu.attention import TritonAttention
from harness.model.config import DECODE_BALANCE
from kernels.balanced_decode import paged_decode_balanced, plan_work_lists
from kernels.paged_decode import DecodeShape, paged_decode, plan_launch
from kernels.reference import reference_decode
from kernels.segments import segment_table
from kernels.work_list import DecodeWorkList, WorkListPlan, over_skew

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM = 32, 8, 128
DTYPE = torch.bfloat16
BLOCK_SIZE = 16
SEGMENT_TOKENS = 65536
BATCHES = (1, 8, 32, 64, 128, 256)
UNIFORM = (128, 1000, 8192)
LONG = (8192, 65536)
SHORT = 1000
TABLE_TOKENS = (16384, 131072)
MAX_REL_ERR = 1e-2
# The decision (see the module docstring).
MAX_SLOWDOWN = 1.05
SKEWED_SPEEDUP = 1.3
COLUMNS = ["batch", "kind", "context", "others", "table_tokens", "impl", "splits", "median_us",
           "kv_bytes", "bandwidth_gbs", "rel_err", "build_us"]


@dataclass(frozen=True)
class Case:
    """One batch: every row `context` tokens long (uniform), or row 0 that long and the others
    SHORT (skewed); block tables table_tokens wide."""

    batch: int
    kind: str
    context: int
    table_tokens: int

    def context_lens(self) -> np.ndarray:
        lens = np.full(self.batch, self.context if self.kind == "uniform" else SHORT, np.int64)
        lens[0] = self.context
        return lens


def cases(batches=BATCHES, uniform=UNIFORM, long=LONG, table_tokens=TABLE_TOKENS) -> list[Case]:
    """Every case the tables can hold; a batch of one long row is skewed only where no uniform
    case has that context."""
    found = []
    for table in table_tokens:
        for batch in batches:
            found += [Case(batch, "uniform", c, table) for c in uniform if c <= table]
            found += [Case(batch, "skewed", c, table) for c in long
                      if c <= table and (batch > 1 or c not in uniform)]
    return found


class Pool:
    """One random KV pool in segments, its blocks handed out in a shuffled order."""

    def __init__(self, tokens: int, *, num_kv_heads: int = NUM_KV_HEADS,
                 head_dim: int = HEAD_DIM, device: str = "cuda", seed: int = 0) -> None:
        segment = min(SEGMENT_TOKENS, tokens)
        tokens = -(-tokens // segment) * segment
        gen = torch.Generator(device=device).manual_seed(seed)
        shape = (tokens, num_kv_heads, head_dim)
        self.k = torch.randn(shape, generator=gen, device=device, dtype=DTYPE)
        self.v = torch.randn(shape, generator=gen, device=device, dtype=DTYPE)
        self.blocks_per_segment = segment // BLOCK_SIZE
        view = (-1, self.blocks_per_segment, BLOCK_SIZE, num_kv_heads, head_dim)
        self.k_segments = list(self.k.view(view).unbind(0))
        self.v_segments = list(self.v.view(view).unbind(0))
        self.table = segment_table(self.k_segments, self.v_segments)
        self.order = torch.randperm(tokens // BLOCK_SIZE, generator=torch.Generator()
                                    .manual_seed(seed)).to(torch.int32)

    def block_tables(self, lens: np.ndarray, width: int) -> torch.Tensor:
        """int32 [len(lens), width]: each row its own shuffled blocks, then zeros (never read)."""
        needed = -(-lens // BLOCK_SIZE)
        tables = torch.zeros(len(lens), width, dtype=torch.int32)
        starts = np.concatenate([[0], np.cumsum(needed)])
        for row, (start, n) in enumerate(zip(starts.tolist(), needed.tolist())):
            tables[row, :n] = self.order[start : start + n]
        return tables.to(self.k.device)


@dataclass(frozen=True)
class Inputs:
    """A case's query, block tables and context lengths on the device."""

    case: Case
    q: torch.Tensor
    tables: torch.Tensor
    lens: torch.Tensor


def inputs(case: Case, pool: Pool, num_heads: int = NUM_HEADS, seed: int = 0) -> Inputs:
    lens = case.context_lens()
    device = pool.k.device
    gen = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(case.batch, num_heads, pool.k.shape[2], generator=gen, device=device,
                    dtype=DTYPE)
    tables = pool.block_tables(lens, case.table_tokens // BLOCK_SIZE)
    return Inputs(case, q, tables, torch.from_numpy(lens).to(device, torch.int32))


def calls(inp: Inputs, pool: Pool) -> dict[str, tuple[int, Callable, float | None]]:
    """impl -> (split count or programs per KV head, the call, host microseconds to build its
    work list)."""
    q, tables, lens, bps, table = inp.q, inp.tables, inp.lens, pool.blocks_per_segment, pool.table
    found = {"split": (plan_launch(q, table, tables).num_splits,
                       lambda: paged_decode(q, None, None, tables, lens, bps, table=table), None)}
    splits = TritonAttention().num_splits(q, table, tables, None)
    if splits != found["split"][0]:
        found["executor"] = (splits, lambda: paged_decode(q, None, None, tables, lens, bps,
                                                          num_splits=splits, table=table), None)
    host_lens = inp.case.context_lens()
    shape = DecodeShape.of(q, table, tables)
    one_wave = plan_work_lists(shape).programs
    for impl, programs in (("balanced", one_wave), ("balanced_x2", 2 * one_wave)):
        plan = plan_work_lists(shape, programs)
        work = DecodeWorkList(plan, inp.case.batch,
                              torch.from_numpy(plan.build(host_lens)).to(q.device))
        found[impl] = (programs, _balanced_call(inp, pool, work), build_us(plan, host_lens))
    return found


def _balanced_call(inp: Inputs, pool: Pool, work: DecodeWorkList) -> Callable:
    return lambda: paged_decode_balanced(inp.q, None, None, inp.tables, work,
                                         pool.blocks_per_segment, table=pool.table)


def build_us(plan: WorkListPlan, lens: np.ndarray, repeats: int = 20) -> float:
    """Median host time of building the work list, in microseconds."""
    out = np.empty(plan.size(len(lens)), np.int32)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        plan.build(lens, out=out)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def checked_rows(case: Case) -> list[int]:
    """The rows checked against the reference: 0 (the long one), 1 and the last."""
    return sorted({0, min(1, case.batch - 1), case.batch - 1})


def reference(inp: Inputs, pool: Pool) -> torch.Tensor:
    """The float32 reference of the checked rows."""
    rows = checked_rows(inp.case)
    return reference_decode(inp.q[rows], pool.k_segments, pool.v_segments, inp.tables[rows],
                            inp.lens[rows], pool.blocks_per_segment)


def measure(case: Case, pool: Pool, timer: Callable = time_us) -> list[dict]:
    """The case's rows of the table: every impl timed and checked (where the executor's launch
    is split's, split's row again as executor's)."""
    inp = inputs(case, pool)
    ref = reference(inp, pool)
    kv_bytes = int(case.context_lens().sum()) * 2 * pool.k[0].numel() * pool.k.element_size()
    rows = []
    for impl, (splits, call, built_us) in calls(inp, pool).items():
        us = timer(call)
        out = call()[checked_rows(case)].float()
        rows.append(dict(batch=case.batch, kind=case.kind, context=case.context,
                         others=int(case.context_lens()[-1]) if case.batch > 1 else 0,
                         table_tokens=case.table_tokens, impl=impl, splits=splits,
                         median_us=us, kv_bytes=kv_bytes, bandwidth_gbs=kv_bytes / us / 1e3,
                         rel_err=((out - ref).norm() / ref.norm()).item(), build_us=built_us))
    if not any(r["impl"] == "executor" for r in rows):
        rows.append(dict(rows[0], impl="executor"))
    lens = case.context_lens()
    auto = over_skew(DECODE_BALANCE["auto"], lens.max(), len(lens), lens.sum())
    chosen = "balanced" if auto else "executor"
    rows.append(dict(next(r for r in rows if r["impl"] == chosen), impl="auto"))
    return rows


def verdict(rows: list[dict]) -> tuple[bool, list[str]]:
    """Whether the table bears out auto as the default (and how balanced alone would do), and
    why."""
    by_case: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        key = (r["batch"], r["kind"], r["context"], r["table_tokens"])
        by_case.setdefault(key, {})[r["impl"]] = r
    wrong = [(impl, key) for key, impls in by_case.items() for impl, r in impls.items()
             if not r["rel_err"] < MAX_REL_ERR]
    lines, met = [], True
    for impl in ("auto", "balanced"):
        speedups = {key: impls["executor"]["median_us"] / impls[impl]["median_us"]
                    for key, impls in by_case.items()}
        worst = min(speedups, key=speedups.get)
        skewed = [math.log(s) for key, s in speedups.items() if key[1] == "skewed"]
        geomean = math.exp(sum(skewed) / len(skewed)) if skewed else 0.0
        checks = [
            (speedups[worst] >= 1 / MAX_SLOWDOWN,
             f"{impl} at worst {1 / speedups[worst]:.3f}x executor's time (batch, kind, "
             f"context, table) {worst}; allowed {MAX_SLOWDOWN}x"),
            (geomean >= SKEWED_SPEEDUP,
             f"skewed cases: {impl} {geomean:.2f}x faster than executor (geometric mean); "
             f"needed {SKEWED_SPEEDUP}x"),
        ]
        met &= impl != "auto" or all(ok for ok, _ in checks)
        lines += [f"{'met' if ok else 'MISSED'}: {text}" for ok, text in checks]
    lines.append(f"{'met' if not wrong else 'MISSED'}: outputs off the reference: "
                 f"{wrong or 'none'}")
    return met and not wrong, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    todo = cases()
    pool = Pool(max(int(c.context_lens().sum()) for c in todo))
    print(f"pool of {pool.k.shape[0]} tokens in {time.perf_counter() - started:.0f} s",
          flush=True)
    rows = []
    for case in todo:
        found = measure(case, pool)
        rows += found
        times = ", ".join(f"{r['impl']} {r['median_us']:.1f} us ({r['splits']})" for r in found)
        built = next(r["build_us"] for r in found if r["impl"] == "balanced")
        print(f"{case.kind:7s} B={case.batch:3d} T={case.context:5d} table {case.table_tokens}: "
              f"{times}; list built in {built:.0f} us", flush=True)
    on, lines = verdict(rows)
    command = "PYTHONPATH=. python " + " ".join(sys.argv)
    notes = [f"# note: llama3-8b heads ({NUM_HEADS} q, {NUM_KV_HEADS} kv, dim {HEAD_DIM}), "
             f"bf16, block size {BLOCK_SIZE}, shuffled block tables; splits: the split count "
             "(split, executor) or programs per KV head (balanced, balanced_x2); executor rows "
             "equal to split's where the executor launches the same; auto rows equal to the "
             "row of the impl it runs"] + \
        [f"# verdict: {line}" for line in lines]
    path = os.path.join(args.out, f"decode_balance_{device_slug()}.csv")
    write_csv(path, header() + [f"# command: {command}"] + notes, rows, COLUMNS)
    print("\n".join(lines))
    print(f"auto as the default: {'borne out' if on else 'NOT borne out'}; "
          f"{time.perf_counter() - started:.0f} s in all -> {path}")
    return 0 if all(r["rel_err"] < MAX_REL_ERR for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
