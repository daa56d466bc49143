"""GPU benchmark of the paged decode kernel against torch SDPA, FlexAttention and copy bandwidth.

One run checks every timed output on the GPU against the float32 reference (first sequences of
each batch), times CUDA-graph replays (median, L2 evicted before each call: time_us), and
writes paged_decode_<device>.csv and .md to --out. Shapes: llama3-8b attention (32 query heads,
8 KV heads, head_dim 128), bf16, one KV pool per (batch, context) cut into segments of 65536 tokens
(as the segmented and hybrid allocators cut it), viewed at each block size, addressed by
contiguous or shuffled block tables. SDPA runs on a contiguous [B, Hkv, T, D]
cache of the same data: the non-paged ceiling. `--tune` times launch configurations and split
counts instead (--tune-profile adds per-kernel device times of graph replays) and writes
paged_decode_tune_<device>.csv (committed under benchmarks/results/tuning/, where the report does
not look); tuning/paged_decode_tune_splits_h100.csv holds several such runs, and its
header says which. The committed sweep came from (on the GPU machine):

    PYTHONPATH=. python3 benchmarks/bench_paged_decode.py --out benchmarks/results
"""
from __future__ import annotations

import argparse
import csv
import datetime
import functools
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
import triton

from harness.gpu.graphs import capture
from kernels.decode_launch import DecodeConfig
from kernels.paged_decode import paged_decode, plan_launch
from kernels.segments import segment_table
from kernels.reference import reference_decode

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM = 32, 8, 128
DTYPE = torch.bfloat16
SEGMENT_TOKENS = 65536
CHECKED_SEQS = 4
COLUMNS = ["batch", "context", "block_size", "layout", "impl", "median_us", "kv_bytes",
           "bandwidth_gbs", "copy_bandwidth_gbs", "max_abs_err"]


@dataclass
class Case:
    """One (batch, context) pool with its query, viewable at any block size."""

    batch: int
    context: int
    q: torch.Tensor
    pool_k: torch.Tensor  # [batch * context, Hkv, D]
    pool_v: torch.Tensor

    @property
    def kv_bytes(self) -> int:
        return 2 * self.pool_k.numel() * self.pool_k.element_size()

    def context_lens(self) -> torch.Tensor:
        return torch.full((self.batch,), self.context, dtype=torch.int32, device=self.q.device)

    def segments(self, block_size: int):
        seg_tokens = min(SEGMENT_TOKENS, self.pool_k.shape[0])
        bps = seg_tokens // block_size
        shape = (-1, bps, block_size, NUM_KV_HEADS, HEAD_DIM)
        return list(self.pool_k.view(shape).unbind(0)), list(self.pool_v.view(shape).unbind(0)), bps

    def block_tables(self, block_size: int, layout: str, seed: int) -> torch.Tensor:
        num_blocks = self.pool_k.shape[0] // block_size
        if layout == "contiguous":
            ids = torch.arange(num_blocks)
        else:
            ids = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(seed))
        return ids.view(self.batch, -1).to(device=self.q.device, dtype=torch.int32)


def make_case(batch: int, context: int, seed: int) -> Case:
    gen = torch.Generator(device="cuda").manual_seed(seed)
    shape = (batch * context, NUM_KV_HEADS, HEAD_DIM)
    return Case(batch, context,
                torch.randn(batch, NUM_HEADS, HEAD_DIM, generator=gen, device="cuda", dtype=DTYPE),
                torch.randn(shape, generator=gen, device="cuda", dtype=DTYPE),
                torch.randn(shape, generator=gen, device="cuda", dtype=DTYPE))


# Bytes read before each timed call, so that the call finds none of its inputs in L2 (an H200
# holds 50 MB). Read rather than written, as triton.testing.do_bench's flush writes them: the
# dirty lines a write leaves in L2 are written back while the timed call reads, which charged a
# plain read of 256 MB 8 us (11%) and each decode call 5-10 us (benchmarks/probe_l2_eviction.py,
# results/tuning/l2_eviction_h200.csv).
EVICT_BYTES = 256 << 20


@functools.lru_cache(maxsize=None)
def _eviction_buffers(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.zeros(EVICT_BYTES // 4, dtype=torch.int32, device=device),
            torch.empty((), dtype=torch.int64, device=device))


def evict_l2() -> None:
    """Replace what L2 holds with clean lines: a sum over EVICT_BYTES."""
    data, total = _eviction_buffers(torch.device("cuda", torch.cuda.current_device()))
    torch.sum(data, dim=0, out=total)


def time_us(fn, graph: bool = True, evict: Callable[[], None] = evict_l2) -> float:
    """Median device time of fn in microseconds, evict() run before each call (as many calls
    as fit in about 40 ms, after about 10 ms of warm-up, as triton.testing.do_bench counts them).

    With graph=True fn is captured once into a CUDA graph (harness.gpu.graphs.capture, which
    runs it three times) and the replays are timed, as a serving engine runs decode: otherwise
    the host's launch overhead (a Triton launch takes longer than a small decode kernel runs)
    leaks into the device time of small shapes.
    """
    if graph:
        fn = capture(fn, None)[0].replay
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    start.record()
    for _ in range(5):
        evict()
        fn()
    end.record()
    torch.cuda.synchronize()
    estimate_ms = start.elapsed_time(end) / 5
    for _ in range(max(1, int(10 / estimate_ms))):
        fn()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(max(1, int(40 / estimate_ms)))]
    for start, end in events:
        evict()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in events) * 1e3


def copy_bandwidth_gbs() -> float:
    src = torch.randn(1 << 29, device="cuda", dtype=DTYPE)  # 1 GiB
    dst = torch.empty_like(src)
    us = time_us(lambda: dst.copy_(src), graph=False)
    return 2 * src.numel() * src.element_size() / us / 1e3


def max_abs_err(case: Case, out: torch.Tensor, block_size: int, table_rows: torch.Tensor) -> tuple:
    """Max abs and relative error of the first sequences against the float32 reference."""
    n = min(case.batch, CHECKED_SEQS)
    k_segs, v_segs, bps = case.segments(block_size)
    ref = reference_decode(case.q[:n], k_segs, v_segs, table_rows[:n], case.context_lens()[:n], bps)
    diff = out[:n].float() - ref
    return diff.abs().max().item(), (diff.norm() / ref.norm()).item()


def run_sdpa(case: Case):
    k = case.pool_k.view(case.batch, case.context, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2).contiguous()
    v = case.pool_v.view(case.batch, case.context, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2).contiguous()
    q = case.q.unsqueeze(2)

    def call():
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

    out = call().squeeze(2)
    err = max_abs_err(case, out, 16, case.block_tables(16, "contiguous", 0))
    return time_us(call), err


def auto_splits(case: Case, block_size: int, tables: torch.Tensor) -> int:
    """The split count paged_decode picks for this case when none is given."""
    k_segs, v_segs, _ = case.segments(block_size)
    return plan_launch(case.q, segment_table(k_segs, v_segs), tables).num_splits


def paged_call(case: Case, block_size: int, tables: torch.Tensor, config=None, num_splits=None):
    k_segs, v_segs, bps = case.segments(block_size)
    table = segment_table(k_segs, v_segs)
    lens = case.context_lens()
    return lambda: paged_decode(case.q, None, None, tables, lens, bps, num_splits=num_splits,
                                table=table, config=config)


def run_paged(case: Case, block_size: int, tables: torch.Tensor, config=None, num_splits=None):
    call = paged_call(case, block_size, tables, config, num_splits)
    out = call()
    return time_us(call), max_abs_err(case, out, block_size, tables)


def launch_overhead_note(case: Case) -> str:
    """time_us without a CUDA graph of paged bs 16 and SDPA: what host launch overhead adds."""
    paged = time_us(paged_call(case, 16, case.block_tables(16, "shuffled", 16)), graph=False)
    k = case.pool_k.view(case.batch, case.context, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2)
    v = case.pool_v.view(case.batch, case.context, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2)
    k, v, q = k.contiguous(), v.contiguous(), case.q.unsqueeze(2)
    sdpa = time_us(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), graph=False)
    return (f"{case.batch}x{case.context} timed without CUDA graphs (host launch overhead "
            f"included): paged bs 16 {paged:.1f} us, SDPA {sdpa:.1f} us")


class Flex:
    """torch FlexAttention over the same paged pool, through a block mask of physical blocks."""

    def __init__(self, budget_s: float):
        from torch.nn.attention.flex_attention import BlockMask, flex_attention
        torch._dynamo.config.cache_size_limit = 64
        self.block_mask_cls = BlockMask
        self.fn = torch.compile(flex_attention)
        self.deadline = time.monotonic() + budget_s
        self.notes: list[str] = []

    def run(self, case: Case, block_size: int, tables: torch.Tensor):
        if time.monotonic() > self.deadline:
            self.notes.append(f"{case.batch}x{case.context} bs {block_size}: skipped, flex time "
                              "budget spent (each new shape compiles)")
            return None
        num_blocks = case.pool_k.shape[0] // block_size
        # Every listed block is full (contexts are block multiples here), so no mask_mod.
        indices = torch.zeros(case.batch, 1, 1, num_blocks, dtype=torch.int32, device="cuda")
        indices[:, 0, 0, :tables.shape[1]] = tables
        full = torch.full((case.batch, 1, 1), tables.shape[1], dtype=torch.int32, device="cuda")
        try:
            mask = self.block_mask_cls.from_kv_blocks(
                torch.zeros_like(full), indices, full, indices, BLOCK_SIZE=(128, block_size),
                seq_lengths=(1, num_blocks * block_size), compute_q_blocks=False)
            k = case.pool_k.view(1, -1, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2)
            v = case.pool_v.view(1, -1, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2)
            q = case.q.unsqueeze(2)

            def call():
                return self.fn(q, k, v, block_mask=mask, enable_gqa=True)

            out = call().squeeze(2)
            torch.cuda.synchronize()
            err = max_abs_err(case, out, block_size, tables)
        except Exception as exc:  # noqa: BLE001 - any failure of an optional baseline is a note
            self.fail(case, block_size, exc)
            return None
        try:
            return time_us(call), err
        except RuntimeError as exc:
            self.fail(case, block_size, exc, "CUDA graph capture failed, timed without: ")
            return time_us(call, graph=False), err

    def fail(self, case: Case, block_size: int, exc: Exception, prefix: str = "failed: ") -> None:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in lines if "Error:" in line), lines[0] if lines else "")
        self.notes.append(f"{case.batch}x{case.context} bs {block_size}: {prefix}"
                          f"{type(exc).__name__}: {reason}")


def device_slug() -> str:
    name = torch.cuda.get_device_name().lower()
    found = re.search(r"\b([a-z]\d{2,3})\b", name)
    return found.group(1) if found else re.sub(r"[^a-z0-9]+", "_", name).strip("_")


def header() -> list[str]:
    return [f"# device: {torch.cuda.get_device_name()}", f"# torch: {torch.__version__}",
            f"# triton: {triton.__version__}", f"# date: {datetime.date.today().isoformat()}"]


def fits(batch: int, context: int) -> bool:
    free, _ = torch.cuda.mem_get_info()
    pool = 2 * batch * context * NUM_KV_HEADS * HEAD_DIM * 2
    return 2 * pool + (1 << 30) < 0.9 * free  # pool + SDPA's contiguous copy + slack


def sweep(args, copy_gbs: float) -> tuple[list[dict], list[str], bool, dict]:
    rows, notes, ok, splits = [], [], True, {}
    flex = Flex(args.flex_budget_s) if args.flex_budget_s > 0 else None

    def add(case, block_size, layout, impl, us, err):
        nonlocal ok
        abs_err, rel = err
        if not rel < 1e-2:
            ok = False
            print(f"FAIL {impl} {case.batch}x{case.context} bs {block_size} {layout}: rel {rel:.2e}")
        rows.append(dict(batch=case.batch, context=case.context, block_size=block_size,
                         layout=layout, impl=impl, median_us=round(us, 2), kv_bytes=case.kv_bytes,
                         bandwidth_gbs=round(case.kv_bytes / us / 1e3, 1),
                         copy_bandwidth_gbs=round(copy_gbs, 1), max_abs_err=f"{abs_err:.3g}"))
        print(f"{impl:6s} B={case.batch:4d} T={case.context:6d} bs={block_size:3d} {layout:10s} "
              f"{us:10.1f} us {case.kv_bytes / us / 1e3:8.0f} GB/s  rel {rel:.1e}", flush=True)

    for batch in args.batches:
        for context in args.contexts:
            if not fits(batch, context):
                notes.append(f"{batch}x{context}: skipped, does not fit in GPU memory")
                continue
            case = make_case(batch, context, seed=batch * 100003 + context)
            add(case, 0, "contiguous", "sdpa", *run_sdpa(case))
            if (batch, context) == (1, 4096):
                notes.append(launch_overhead_note(case))
            for block_size in args.block_sizes:
                splits[(batch, context, block_size)] = auto_splits(
                    case, block_size, case.block_tables(block_size, "contiguous", 0))
                for layout in ("contiguous", "shuffled"):
                    tables = case.block_tables(block_size, layout, seed=block_size)
                    add(case, block_size, layout, "paged", *run_paged(case, block_size, tables))
                    if flex and layout == "shuffled" and block_size in args.flex_block_sizes \
                            and (batch, context) in args.flex_shapes:
                        result = flex.run(case, block_size, tables)
                        if result:
                            add(case, block_size, layout, "flex", *result)
            del case
            torch.cuda.empty_cache()
    if flex:
        notes.extend(flex.notes)
    return rows, notes, ok, splits


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as fh:
        fh.write("\n".join(header()) + "\n")
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def markdown(rows: list[dict], notes: list[str], copy_gbs: float, block_sizes,
             splits: dict) -> str:
    sdpa = {(r["batch"], r["context"]): r for r in rows if r["impl"] == "sdpa"}
    lines = header() + ["", f"Copy bandwidth (device-to-device, read + write): {copy_gbs:.0f} GB/s.",
                        "Llama3-8b heads (32 q, 8 kv, dim 128), bf16; GB/s = K+V bytes / median time.",
                        "Paged cells: GB/s (% of SDPA on the contiguous cache). Each pool is cut "
                        f"into segments of {SEGMENT_TOKENS} tokens; launch shape and split count "
                        "are kernels.paged_decode's defaults (split counts below).",
                        "Times: median of CUDA-graph replays (time_us, L2 evicted before each).",
                        ""]
    for impl, layout in (("paged", "shuffled"), ("paged", "contiguous"), ("flex", "shuffled")):
        cells = {(r["batch"], r["context"], r["block_size"]): r for r in rows
                 if r["impl"] == impl and r["layout"] == layout}
        if not cells:
            continue
        lines += [f"### {impl}, {layout} block tables", "",
                  "| batch | context | SDPA us | SDPA GB/s | " + " | ".join(
                      f"bs {bs}" for bs in block_sizes) + " |",
                  "|---" * (4 + len(block_sizes)) + "|"]
        for (batch, context), ref in sdpa.items():
            if not any((batch, context, bs) in cells for bs in block_sizes):
                continue
            cols = []
            for bs in block_sizes:
                r = cells.get((batch, context, bs))
                cols.append("-" if r is None else
                            f"{r['bandwidth_gbs']:.0f} ({100 * ref['median_us'] / r['median_us']:.0f}%)")
            lines.append(f"| {batch} | {context} | {ref['median_us']:.1f} | "
                         f"{ref['bandwidth_gbs']:.0f} | " + " | ".join(cols) + " |")
        lines.append("")
    lines += ["### Split counts (kernels.paged_decode.plan_launch)", "",
              "| batch | context | " + " | ".join(f"bs {bs}" for bs in block_sizes) + " |",
              "|---" * (2 + len(block_sizes)) + "|"]
    for batch, context in sdpa:
        lines.append(f"| {batch} | {context} | " + " | ".join(
            str(splits.get((batch, context, bs), "-")) for bs in block_sizes) + " |")
    lines.append("")
    lines += ["### Targets", ""] + [f"- {t}" for t in targets(rows, sdpa, copy_gbs)] + [""]
    if notes:
        lines += ["### Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def targets(rows: list[dict], sdpa: dict, copy_gbs: float) -> list[str]:
    """The issue's done-when checks, computed from the rows (paged time vs SDPA time)."""
    paged = [r for r in rows if r["impl"] == "paged"]

    def ratio(r):
        return sdpa[(r["batch"], r["context"])]["median_us"] / r["median_us"]

    def worst(selected):
        if not selected:
            return "no rows"
        r = min(selected, key=ratio)
        return (f"{100 * ratio(r):.0f}% at {r['batch']}x{r['context']} bs {r['block_size']} "
                f"{r['layout']}")

    big = [r for r in paged if r["batch"] * r["context"] >= 65536]
    big16 = [r for r in big if r["block_size"] >= 16]
    one4k = [r for r in paged if (r["batch"], r["context"]) == (1, 4096) and r["block_size"] >= 16]
    bs1 = [r for r in paged if r["block_size"] == 1]
    checks = [
        (f"block_size >= 16, >= 64k total tokens, >= 90% of SDPA: worst {worst(big16)}",
         bool(big16) and min(map(ratio, big16)) >= 0.9),
        (f"1x4096, block_size >= 16, faster than SDPA: worst {worst(one4k)}",
         bool(one4k) and min(map(ratio, one4k)) > 1.0),
        (f"block_size 1 >= 70% of SDPA: worst {worst(bs1)} (all shapes); "
         f"{worst([r for r in bs1 if r in big])} (>= 64k tokens)",
         bool(bs1) and min(map(ratio, bs1)) >= 0.7),
    ]
    lines = [f"{'met' if ok else 'MISSED'}: {text}" for text, ok in checks]
    if big16:
        share = sorted(r["bandwidth_gbs"] / copy_gbs for r in big16)
        lines.append(f"aim, copy bandwidth: block_size >= 16 at >= 64k tokens reaches "
                     f"{100 * share[0]:.0f}% (worst) to {100 * share[-1]:.0f}% (best), "
                     f"median {100 * share[len(share) // 2]:.0f}% of {copy_gbs:.0f} GB/s")
    return lines


def tune(args, copy_gbs: float) -> list[dict]:
    """Time launch configurations and split counts on a few shapes of the sweep."""
    rows = []
    path = os.path.join(args.out, f"paged_decode_tune_{device_slug()}.csv")
    for batch, context in args.tune_shapes:
        if not fits(batch, context):
            print(f"tune {batch}x{context}: skipped, does not fit")
            continue
        case = make_case(batch, context, seed=1)
        sdpa_us, _ = run_sdpa(case)
        print(f"tune B={batch} T={context} sdpa {sdpa_us:.2f} us, again {run_sdpa(case)[0]:.2f} us",
              flush=True)
        if args.tune_profile:
            profile_breakdown(case, sdpa=True)
        for block_size in args.block_sizes:
            tables = case.block_tables(block_size, args.tune_layout, seed=block_size)
            base = auto_splits(case, block_size, tables)
            print(f"tune B={batch} T={context} bs={block_size}: default split count {base}")
            split_counts = args.tune_splits or sorted({base} | {max(1, round(base * f))
                                                                for f in args.tune_split_factors})
            for config in args.tune_configs:
                if args.tune_profile and block_size == args.block_sizes[0]:
                    profile_breakdown(case, tables=tables, block_size=block_size, config=config,
                                      num_splits=base)
                for splits in split_counts:
                    try:
                        us, (abs_err, rel) = run_paged(case, block_size, tables, config, splits)
                    except Exception as exc:  # noqa: BLE001 - a failing variant is a result
                        print(f"tune B={batch} T={context} bs={block_size} {config} S={splits}: "
                              f"failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
                        continue
                    rows.append(dict(batch=batch, context=context, block_size=block_size,
                                     config=config_text(config), num_splits=splits,
                                     median_us=round(us, 2), sdpa_us=round(sdpa_us, 2),
                                     bandwidth_gbs=round(case.kv_bytes / us / 1e3, 1),
                                     rel_err=f"{rel:.2e}"))
                    print(f"tune B={batch} T={context} bs={block_size} {config_text(config)} "
                          f"S={splits}: {us:.2f} us ({100 * sdpa_us / us:.1f}% of SDPA "
                          f"{sdpa_us:.2f}) rel {rel:.1e}", flush=True)
                    write_csv(path, rows, list(rows[0]))
        del case
        torch.cuda.empty_cache()
    return rows


def config_text(config) -> str:
    if config is None:
        return "default"
    text = f"{config.block_n}:{config.num_warps}:{config.num_stages}"
    return text if config.maxnreg is None else f"{text}:{config.maxnreg}"


def profile_breakdown(case: Case, sdpa: bool = False, tables=None, block_size=0, config=None,
                      num_splits=None, replays: int = 30) -> None:
    """Per-kernel device times and the first-to-last kernel span of graph replays."""
    from torch.profiler import ProfilerActivity, profile
    if sdpa:
        k = case.pool_k.view(case.batch, case.context, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2)
        v = case.pool_v.view(case.batch, case.context, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2)
        k, v, q = k.contiguous(), v.contiguous(), case.q.unsqueeze(2)

        def fn():
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        label = "sdpa"
    else:
        fn = paged_call(case, block_size, tables, config, num_splits)
        label = f"paged bs={block_size} {config_text(config)} S={num_splits}"
    try:
        fn()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        flush = torch.empty(64 << 20, dtype=torch.int32, device="cuda")
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for i in range(replays):
                flush.fill_(i)
                graph.replay()
            torch.cuda.synchronize()
        kernels = sorted((e for e in prof.events() if e.device_type.name == "CUDA"),
                         key=lambda e: e.time_range.start)
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        print(f"profile {label}: failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
        return
    spans, durations, current = [], {}, []
    for e in kernels + [None]:
        if e is None or "fill" in e.name.lower() or "Fill" in e.name:
            if current:
                spans.append(max(x.time_range.end for x in current)
                             - min(x.time_range.start for x in current))
            current = []
            continue
        current.append(e)
        durations.setdefault(e.name[:60], []).append(e.time_range.end - e.time_range.start)
    spans.sort()
    parts = ", ".join(f"{name} {sorted(d)[len(d) // 2]:.2f}" for name, d in durations.items())
    print(f"profile {label}: span median {spans[len(spans) // 2] if spans else float('nan'):.2f} "
          f"us over {len(spans)} replays; kernels (median us): {parts}", flush=True)


def shapes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in item.split("x")) for item in text.split(",")]


def configs(text: str) -> list[DecodeConfig | None]:
    """block_n:num_warps:num_stages[:maxnreg] or "default" (kernels.paged_decode's), comma
    separated."""
    return [None if item == "default" else DecodeConfig(*(int(x) for x in item.split(":")))
            for item in text.split(",")]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    parser.add_argument("--batches", type=ints, default=[1, 8, 32, 64, 128])
    parser.add_argument("--contexts", type=ints, default=[512, 4096, 32768])
    parser.add_argument("--block-sizes", type=ints, default=[1, 16, 64, 256])
    parser.add_argument("--flex-budget-s", type=float, default=100.0)
    parser.add_argument("--flex-block-sizes", type=ints, default=[1, 16, 64, 256])
    parser.add_argument("--flex-shapes", type=shapes, default=shapes("1x4096,8x32768,64x4096,128x512"))
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--tune-shapes", type=shapes, default=shapes("1x4096,16x4096,128x512,8x32768"))
    parser.add_argument("--tune-configs", type=configs,
                        default=configs("64:4:3,32:4:3,128:4:2,128:4:3,128:8:2,64:8:3"))
    parser.add_argument("--tune-split-factors", type=lambda t: [float(x) for x in t.split(",")],
                        default=[0.5, 2.0])
    parser.add_argument("--tune-splits", type=ints, default=None)
    parser.add_argument("--tune-profile", action="store_true")
    parser.add_argument("--tune-layout", choices=("shuffled", "contiguous"), default="shuffled",
                        help="the tuned shapes' block tables: blocks in random order, or in "
                             "order (each sequence's KV in one run, as segmented lays it out)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    copy_gbs = copy_bandwidth_gbs()
    print(f"copy bandwidth {copy_gbs:.0f} GB/s on {torch.cuda.get_device_name()}", flush=True)
    slug = device_slug()
    if args.tune:
        tune(args, copy_gbs)
        return 0
    rows, notes, ok, splits = sweep(args, copy_gbs)
    write_csv(os.path.join(args.out, f"paged_decode_{slug}.csv"), rows, COLUMNS)
    text = markdown(rows, notes, copy_gbs, args.block_sizes, splits)
    with open(os.path.join(args.out, f"paged_decode_{slug}.md"), "w") as fh:
        fh.write(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
