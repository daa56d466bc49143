"""GPU benchmark of the paged prefill kernel against torch SDPA, and of paged decode in one pass
per sequence (PagedAttention v1) against its split-KV launch (v2).

prefill_<device>.csv: causal attention of `batch` chunks of `query` tokens, each after `context`
tokens already in the cache (0: a fresh prompt), llama3-8b heads (32 q, 8 kv, dim 128), bf16.
`paged` is kernels.paged_prefill at block size 16 over a shuffled block table, with its own
split count (num_splits; 0 for SDPA); where that is more than one, `paged_unsplit` is the same
launch with one split, the kernel before split-KV; `sdpa` is
torch's scaled_dot_product_attention on a contiguous [B, Hkv, T, D] cache of the same data,
causal aligned bottom-right (is_causal, or torch.nn.attention.bias.causal_lower_right after a
context), GQA through enable_gqa on the flash backend where it applies, no explicit mask.

decode_splits_<device>.csv: kernels.paged_decode at block size 16 (shuffled table) with
num_splits=1 (`paged_v1`) and with its own split choice (`paged_v2`), SDPA on the contiguous
cache as the floor; gbps = K+V bytes / time; ratio_to_sdpa = SDPA time / this time.

Every timed output is first checked against the float32 reference (kernels.reference) on the
last query rows of the first sequence (prefill) or the first sequences (decode). Times are
medians of CUDA-graph replays (bench_paged_decode.time_us, L2 evicted before each). `--tune` times
launch configurations of the prefill kernel instead (prefill_tune_<device>.csv). Run on the GPU
machine as:

    PYTHONPATH=. python benchmarks/bench_prefill.py --out benchmarks/results
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

from bench_paged_decode import (
    NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, DTYPE, device_slug, fits, header, make_case, run_paged,
    run_sdpa, time_us,
)
from kernels.paged_decode import plan_launch
from kernels.paged_prefill import PrefillShape, paged_prefill, plan_prefill
from kernels.prefill_launch import PrefillConfig
from kernels.paged_prefill import plan_launch as plan_prefill_launch
from kernels.reference import reference_prefill
from kernels.segments import segment_table

BLOCK_SIZE = 16
SEGMENT_TOKENS = 65536
CHECKED_ROWS = 256
PREFILL_COLUMNS = ["batch", "query", "context", "impl", "num_splits", "median_us", "tflops",
                   "rel_err"]
DECODE_COLUMNS = ["batch", "context", "impl", "num_splits", "median_us", "gbps", "ratio_to_sdpa"]
# (batch, query, context): the three targets first.
TARGETS = [(1, 8192, 0), (4, 2048, 0), (1, 2048, 6144)]
# Short chunks over long contexts last: grids far smaller than the GPU, where paged splits each
# query tile's keys (a small mixed step's chunk, a 300-token chunk of a prompt).
PREFILL_SHAPES = TARGETS + [(1, 512, 0), (8, 512, 0), (1, 16384, 0), (16, 128, 4096),
                            (4, 512, 3584), (64, 16, 2048), (1, 2, 1000), (1, 16, 1000),
                            (1, 2, 8000), (1, 16, 8000), (1, 300, 700)]
TARGET_SPEED = 0.8
DEVICE = "cuda"


class PrefillCase:
    """`batch` sequences of context + query tokens in a paged pool (shuffled blocks) and the
    same KV as a contiguous cache."""

    def __init__(self, batch: int, query: int, context: int, seed: int):
        self.batch, self.query, self.context = batch, query, context
        total = context + query
        blocks_per_seq = -(-total // BLOCK_SIZE)
        tokens = batch * blocks_per_seq * BLOCK_SIZE
        gen = torch.Generator(device=DEVICE).manual_seed(seed)
        shape = (tokens, NUM_KV_HEADS, HEAD_DIM)
        self.pool_k = torch.randn(shape, generator=gen, device=DEVICE, dtype=DTYPE)
        self.pool_v = torch.randn(shape, generator=gen, device=DEVICE, dtype=DTYPE)
        self.q = torch.randn(batch * query, NUM_HEADS, HEAD_DIM, generator=gen, device=DEVICE,
                             dtype=DTYPE)
        order = torch.randperm(tokens // BLOCK_SIZE, generator=torch.Generator().manual_seed(seed))
        self.block_tables = order.view(batch, blocks_per_seq).to(DEVICE, torch.int32)
        seg_tokens = min(SEGMENT_TOKENS, tokens)
        while tokens % seg_tokens:
            seg_tokens //= 2
        self.bps = seg_tokens // BLOCK_SIZE
        view = (-1, self.bps, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM)
        self.k_segments = list(self.pool_k.view(view).unbind(0))
        self.v_segments = list(self.pool_v.view(view).unbind(0))
        self.table = segment_table(self.k_segments, self.v_segments)
        self.query_starts = torch.arange(0, batch * query + 1, query, dtype=torch.int32,
                                         device=DEVICE)
        self.context_lens = torch.full((batch,), total, dtype=torch.int32, device=DEVICE)

    @property
    def flops(self) -> float:
        """Multiply-adds of QK^T and PV over the causally visible keys, times two."""
        keys = self.query * self.context + self.query * (self.query + 1) / 2
        return 4 * self.batch * NUM_HEADS * HEAD_DIM * keys

    def num_splits(self) -> int:
        """The split count paged_prefill chooses for this case."""
        return plan_prefill_launch(self.q, self.table, self.block_tables).num_splits

    def paged(self, config: PrefillConfig | None = None, num_splits: int | None = None):
        return lambda: paged_prefill(self.q, None, None, self.block_tables, self.query_starts,
                                     self.context_lens, self.bps, table=self.table, config=config,
                                     num_splits=num_splits)

    def sdpa(self):
        """SDPA on a contiguous cache; the backend that ran it (flash preferred)."""
        total = self.context + self.query
        slots = (self.block_tables.long()[:, :, None] * BLOCK_SIZE
                 + torch.arange(BLOCK_SIZE, device=DEVICE)).view(self.batch, -1)[:, :total]
        k = self.pool_k[slots].transpose(1, 2).contiguous()  # [B, Hkv, T, D]
        v = self.pool_v[slots].transpose(1, 2).contiguous()
        q = self.q.view(self.batch, self.query, NUM_HEADS, HEAD_DIM).transpose(1, 2).contiguous()
        mask = causal_lower_right(self.query, total) if self.context else None

        def call():
            if mask is None:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

        def packed():
            return call().transpose(1, 2).reshape(-1, NUM_HEADS, HEAD_DIM)
        try:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                packed()
            return lambda: _with_flash(packed), "flash"
        except RuntimeError:
            return packed, "default dispatch"

    def rel_err(self, out: torch.Tensor) -> float:
        """Relative error of the last CHECKED_ROWS query rows of sequence 0 (the rows that see
        the most keys) against the float32 reference."""
        rows = min(CHECKED_ROWS, self.query)
        lo = self.query - rows
        ref = reference_prefill(self.q[lo:self.query], self.k_segments, self.v_segments,
                                self.block_tables[:1], self.query_starts.new_tensor([0, rows]),
                                self.context_lens[:1], self.bps)
        diff = out[lo:self.query].float() - ref
        return (diff.norm() / ref.norm()).item()


def _with_flash(fn):
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return fn()


def timed(fn) -> float:
    try:
        return time_us(fn)
    except RuntimeError:  # a call that cannot be captured is timed eagerly
        torch.cuda.synchronize()
        return time_us(fn, graph=False)


def prefill_fits(batch: int, query: int, context: int) -> bool:
    free, _ = torch.cuda.mem_get_info()
    kv = 2 * batch * (context + query) * NUM_KV_HEADS * HEAD_DIM * 2
    rows = CHECKED_ROWS * NUM_HEADS * (context + query) * 4 * 4  # the reference's scores
    return 2 * kv + rows + (1 << 30) < 0.9 * free


def prefill_sweep(shapes, notes: list[str]) -> tuple[list[dict], bool]:
    rows, ok = [], True
    for batch, query, context in shapes:
        if not prefill_fits(batch, query, context):
            notes.append(f"prefill {batch}x{query} after {context}: skipped, does not fit")
            continue
        case = PrefillCase(batch, query, context, seed=batch * 7919 + query + context)
        sdpa, backend = case.sdpa()
        if backend != "flash":
            notes.append(f"prefill {batch}x{query} after {context}: SDPA through {backend}")
        splits = case.num_splits()
        impls = [("sdpa", 0, sdpa), ("paged", splits, case.paged())]
        if splits > 1:
            impls.append(("paged_unsplit", 1, case.paged(num_splits=1)))
        for impl, num_splits, fn in impls:
            err = case.rel_err(fn())
            if not err < 1e-2:
                ok = False
                print(f"FAIL {impl} {batch}x{query} after {context}: rel {err:.2e}")
            us = timed(fn)
            rows.append(dict(batch=batch, query=query, context=context, impl=impl,
                             num_splits=num_splits, median_us=round(us, 2),
                             tflops=round(case.flops / us / 1e6, 1), rel_err=f"{err:.2e}"))
            print(f"prefill {impl:13s} B={batch:3d} q={query:6d} ctx={context:6d} "
                  f"S={num_splits:2d} {us:10.1f} us {case.flops / us / 1e6:6.0f} TFLOP/s "
                  f"rel {err:.1e}", flush=True)
        del case
        torch.cuda.empty_cache()
    return rows, ok


def speed_table(rows: list[dict]) -> tuple[list[str], bool]:
    """Lines of paged against SDPA per shape (speed = SDPA time / paged time), and whether the
    targets are met."""
    times = {(r["batch"], r["query"], r["context"], r["impl"]): r["median_us"] for r in rows}
    lines = ["| batch | query | context | SDPA us | paged us | paged speed / SDPA |",
             "|---|---|---|---|---|---|"]
    met = True
    for (batch, query, context, impl), us in times.items():
        if impl != "paged" or (batch, query, context, "sdpa") not in times:
            continue
        speed = times[(batch, query, context, "sdpa")] / us
        target = (batch, query, context) in TARGETS
        if target and speed < TARGET_SPEED:
            met = False
        lines.append(f"| {batch} | {query} | {context} | {times[(batch, query, context, 'sdpa')]}"
                     f" | {us} | {speed:.2f}{' (target)' if target else ''} |")
    missing = [t for t in TARGETS if (*t, "paged") not in times]
    return lines, met and not missing


def decode_sweep(batches, contexts, notes: list[str]) -> list[dict]:
    rows = []
    for batch in batches:
        for context in contexts:
            if not fits(batch, context):
                notes.append(f"decode {batch}x{context}: skipped, does not fit in GPU memory")
                continue
            case = make_case(batch, context, seed=batch * 100003 + context)
            tables = case.block_tables(BLOCK_SIZE, "shuffled", seed=BLOCK_SIZE)
            sdpa_us, _ = run_sdpa(case)
            k_segs, v_segs, _ = case.segments(BLOCK_SIZE)
            auto = plan_launch(case.q, segment_table(k_segs, v_segs), tables).num_splits
            results = [("sdpa", 0, sdpa_us)]
            for impl, splits in (("paged_v1", 1), ("paged_v2", auto)):
                us, (_, rel) = run_paged(case, BLOCK_SIZE, tables, num_splits=splits)
                if not rel < 1e-2:
                    notes.append(f"decode {batch}x{context} {impl}: rel error {rel:.2e}")
                results.append((impl, splits, us))
            for impl, splits, us in results:
                rows.append(dict(batch=batch, context=context, impl=impl, num_splits=splits,
                                 median_us=round(us, 2),
                                 gbps=round(case.kv_bytes / us / 1e3, 1),
                                 ratio_to_sdpa=round(sdpa_us / us, 3)))
                print(f"decode {impl:8s} B={batch:3d} T={context:7d} S={splits:3d} {us:10.1f} us "
                      f"{case.kv_bytes / us / 1e3:7.0f} GB/s {sdpa_us / us:5.2f}x SDPA",
                      flush=True)
            del case
            torch.cuda.empty_cache()
    return rows


TUNE_CONFIGS = [PrefillConfig(*c) for c in ((128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 2),
                                             (128, 32, 4, 4), (64, 64, 4, 3), (128, 64, 8, 4),
                                             (64, 128, 4, 2))]


def tune(out_dir: str) -> None:
    rows = []
    for batch, query, context in TARGETS:
        case = PrefillCase(batch, query, context, seed=1)
        sdpa, _ = case.sdpa()
        sdpa_us = timed(sdpa)
        for config in TUNE_CONFIGS:
            try:
                fn = case.paged(config)
                err = case.rel_err(fn())
                us = timed(fn)
            except Exception as exc:  # noqa: BLE001 - a failing variant is a result
                print(f"tune {config}: failed: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            text = f"{config.block_m}:{config.block_n}:{config.num_warps}:{config.num_stages}"
            rows.append(dict(batch=batch, query=query, context=context, config=text,
                             median_us=round(us, 2), sdpa_us=round(sdpa_us, 2),
                             speed_vs_sdpa=round(sdpa_us / us, 3), rel_err=f"{err:.1e}"))
            print(f"tune {batch}x{query} after {context} {text}: {us:.1f} us, "
                  f"{sdpa_us / us:.2f}x SDPA ({sdpa_us:.1f} us)", flush=True)
        del case
        torch.cuda.empty_cache()
    write_csv(os.path.join(out_dir, f"prefill_tune_{device_slug()}.csv"), rows, list(rows[0]), [])


def write_csv(path: str, rows: list[dict], columns: list[str], notes: list[str]) -> None:
    command = "PYTHONPATH=. python " + " ".join(sys.argv)
    with open(path, "w", newline="") as fh:
        lines = header() + [f"# command: {command}"] + [f"# note: {n}" for n in notes]
        fh.write("\n".join(lines) + "\n")
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--decode-batches", type=ints, default=[1, 8, 64])
    parser.add_argument("--decode-contexts", type=ints, default=[512, 2048, 8192, 32768, 131072])
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    slug = device_slug()
    if args.tune:
        tune(args.out)
        return 0
    notes: list[str] = []
    plan = plan_prefill(PrefillShape(NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE, 1, DTYPE,
                                     torch.device("cuda"), DTYPE))
    notes.append(f"paged launch: {plan.config}, {plan.block_q} query tokens per tile")
    rows, ok = prefill_sweep(PREFILL_SHAPES, notes)
    lines, met = speed_table(rows)
    notes.append(f"targets (paged >= {TARGET_SPEED} x SDPA speed at "
                 + ", ".join(f"{b}x{q} after {c}" for b, q, c in TARGETS)
                 + f"): {'met' if met else 'MISSED'}")
    write_csv(os.path.join(args.out, f"prefill_{slug}.csv"), rows, PREFILL_COLUMNS, notes)
    print("\n".join(lines + [""] + notes), flush=True)
    if not args.skip_decode:
        decode_notes = ["ratio_to_sdpa = SDPA time / this time; num_splits 0 = not split"]
        decode_rows = decode_sweep(args.decode_batches, args.decode_contexts, decode_notes)
        write_csv(os.path.join(args.out, f"decode_splits_{slug}.csv"), decode_rows,
                  DECODE_COLUMNS, decode_notes)
        print("\n".join(decode_notes))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
