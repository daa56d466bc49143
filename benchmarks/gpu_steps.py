"""The hardware floor of every measured step, and the step bins of gpu_steps_<gpu>.csv.

Ceilings are measured on the device this runs on (on a CPU too, for a benchmark's smoke run):
device-to-device copy bandwidth (bytes read plus written), torch.matmul time of one layer's
linear layers and of lm_head over a token grid (interpolated in between), and the causal
flash-attention rate of SDPA. A step's floor is the larger of (a) its GEMM time plus its
attention time (KV bytes read at copy bandwidth, prefill attention FLOPs at the SDPA rate) and
(b) weight bytes plus KV bytes at copy bandwidth.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import triton

TOKEN_GRID = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
DECODE_BINS = ((1, 1), (2, 8), (9, 32), (33, 64), (65, 128), (129, 256))
MIXED_BINS = ((1, 256), (257, 1024), (1025, 4096), (4097, 8192))
STEP_COLUMNS = ("allocator", "kind", "bin", "steps", "measured_ms", "floor_ms", "ratio")
CPU_REPEATS = 5  # timed calls per median on a CPU (no CUDA events there)


@dataclass(frozen=True)
class Ceilings:
    copy_bytes_s: float
    sdpa_flop_s: float
    layers_s: np.ndarray  # [len(TOKEN_GRID)]: every layer's linear layers at that many tokens
    lm_head_s: np.ndarray  # [len(TOKEN_GRID)]
    weight_bytes: int
    kv_bytes_per_token: int
    attention_flops_per_pair: int  # all layers, QK and PV


def _median_s(fn, device: torch.device) -> float:
    if device.type == "cuda":
        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3
    fn()
    times = []
    for _ in range(CPU_REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def linear_layers_s(decoder, tokens: int) -> float:
    """Seconds of every layer's four linear layers at `tokens` rows (torch.matmul: the floor's
    GEMM time)."""
    c, layer = decoder.config, decoder.weights.layers[0]
    dev, dtype = layer.qkv.device, layer.qkv.dtype
    x = torch.randn(tokens, c.hidden_size, device=dev, dtype=dtype)
    attn = torch.randn(tokens, c.num_heads * c.head_dim, device=dev, dtype=dtype)
    mid = torch.randn(tokens, c.intermediate_size, device=dev, dtype=dtype)

    def linears():
        torch.matmul(x, layer.qkv.t())
        torch.matmul(attn, layer.o.t())
        torch.matmul(x, layer.gate_up.t())
        torch.matmul(mid, layer.down.t())

    return _median_s(linears, dev) * c.num_layers


def measure_ceilings(decoder) -> Ceilings:
    c, w = decoder.config, decoder.weights
    dev, dtype = w.embed.device, w.embed.dtype
    # 1 GiB each way on a GPU (far past its caches); a CPU smoke run copies less.
    src = torch.randn(1 << (29 if dev.type == "cuda" else 22), device=dev, dtype=torch.bfloat16)
    dst = torch.empty_like(src)

    def median_s(fn) -> float:
        return _median_s(fn, dev)

    copy = 2 * src.numel() * src.element_size() / median_s(lambda src=src, dst=dst: dst.copy_(src))
    del src, dst
    layers_s, head_s = [], []
    for tokens in TOKEN_GRID:
        layers_s.append(linear_layers_s(decoder, tokens))
        x = torch.randn(tokens, c.hidden_size, device=dev, dtype=dtype)
        head_s.append(median_s(lambda: torch.matmul(x, w.lm_head.t())))
    q = torch.randn(1, c.num_heads, 4096, c.head_dim, device=dev, dtype=dtype)
    k = torch.randn(1, c.num_heads, 4096, c.head_dim, device=dev, dtype=dtype)
    sdpa_s = median_s(lambda: F.scaled_dot_product_attention(q, k, k, is_causal=True))
    per_pair = 4 * c.num_heads * c.head_dim  # QK and PV, a multiply and an add each
    weights = sum(t.numel() * t.element_size() for lw in w.layers
                  for t in (lw.qkv, lw.o, lw.gate_up, lw.down)) + w.lm_head.numel() * w.lm_head.element_size()
    kv = 2 * c.num_layers * c.num_kv_heads * c.head_dim * w.embed.element_size()
    return Ceilings(copy, per_pair * 4096 * 4097 / 2 / sdpa_s, np.array(layers_s),
                    np.array(head_s), weights, kv, per_pair * c.num_layers)


def floor_s(log: pd.DataFrame, ceil: Ceilings) -> np.ndarray:
    """The floor of each step of a StepLog frame (a verification's rows are all sampled)."""
    tokens = (log.decode_seqs + log.verify_tokens + log.prefill_tokens).to_numpy(float)
    sampled = (log.decode_seqs + log.verify_tokens + log.prefill_seqs).to_numpy(float)
    grid = np.array(TOKEN_GRID, float)
    gemm = np.interp(tokens, grid, ceil.layers_s) + np.interp(sampled, grid, ceil.lm_head_s)
    kv_bytes = (log.decode_context_tokens + log.prefill_context_tokens).to_numpy(float) \
        * ceil.kv_bytes_per_token
    attention = kv_bytes / ceil.copy_bytes_s \
        + log.prefill_attention_pairs.to_numpy(float) * ceil.attention_flops_per_pair \
        / ceil.sdpa_flop_s
    return np.maximum(gemm + attention, (ceil.weight_bytes + kv_bytes) / ceil.copy_bytes_s)


def _label(lo: int, hi: int, mixed: bool) -> str:
    if mixed and lo == 1:
        return f"<={hi}"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def bin_rows(allocator: str, log: pd.DataFrame, ceil: Ceilings) -> list[dict]:
    """One row per non-empty bin: decode-only steps by batch size, mixed steps (any prefill
    tokens) by batch tokens."""
    floors = floor_s(log, ceil)
    tokens = (log.decode_seqs + log.prefill_tokens).to_numpy()
    mixed = log.prefill_tokens.to_numpy() > 0
    rows = []
    for kind, bins, size, of_kind in (("decode", DECODE_BINS, log.decode_seqs.to_numpy(), ~mixed),
                                      ("mixed", MIXED_BINS, tokens, mixed)):
        for lo, hi in bins:
            sel = of_kind & (size >= lo) & (size <= hi)
            if not sel.any():
                continue
            measured = float(np.median(log.step_s.to_numpy()[sel])) * 1e3
            floor = float(np.median(floors[sel])) * 1e3
            rows.append({"allocator": allocator, "kind": kind, "bin": _label(lo, hi, kind == "mixed"),
                         "steps": int(sel.sum()), "measured_ms": measured, "floor_ms": floor,
                         "ratio": measured / floor})
    return rows


def host_notes(allocator: str, log: pd.DataFrame) -> str:
    """Host preparation per step, in wall time and in the thread's CPU time; for the steps at
    its 99th percentile and over, their parts and the time off the core; for eager steps, how
    much of the step the host spent launching (near 1: the host sets the pace)."""
    prep = log.host_prep_s.to_numpy() * 1e3
    cpu = log.host_prep_cpu_s.to_numpy() * 1e3
    p99 = np.percentile(prep, 99)
    eager = log[~log.graph]
    busy = (eager.enqueue_s / eager.step_s).to_numpy()
    slow = log[prep >= p99]
    parts = {"plan": slow.plan_s, "stage": slow.stage_s,
             "rest": slow.host_prep_s - slow.plan_s - slow.stage_s,
             "off core": slow.host_prep_s - slow.host_prep_cpu_s}
    return (f"{allocator}: host prep per step median {np.median(prep):.3f} ms, p99 "
            f"{p99:.3f} ms, max {prep.max():.3f} ms; its CPU time median "
            f"{np.median(cpu):.3f} ms, p99 {np.percentile(cpu, 99):.3f} ms, max "
            f"{cpu.max():.3f} ms; eager steps "
            f"{len(eager)}, enqueue/step median {np.median(busy) if len(busy) else 0:.2f}; "
            f"the {len(slow)} steps at p99 and over: median "
            + ", ".join(f"{k} {v.median() * 1e3:.3f} ms" for k, v in parts.items())
            + f", {slow.decode_seqs.median():.0f} decode rows, "
            f"{slow.prefill_tokens.median():.0f} prefill tokens, {slow.graph.mean():.0%} graphed")


def paged_decode_host_us(calls: int = 200) -> float:
    """Median host time of one eager paged_decode call at batch 1, context 4096."""
    from bench_paged_decode import make_case, paged_call

    case = make_case(1, 4096, seed=0)
    return host_us(paged_call(case, 16, case.block_tables(16, "contiguous", 0)), calls)


def host_us(fn, calls: int, warmup: int = 20) -> float:
    """Median host time of one call of fn in microseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    torch.cuda.synchronize()
    return float(np.median(times)) * 1e6


# What makes two steps the same batch: their rows and the context those rows read.
SAME_BATCH = ("decode_seqs", "decode_context_tokens", "prefill_seqs", "prefill_tokens",
              "prefill_context_tokens", "verify_tokens")


def same_batch_notes(logs: dict[str, pd.DataFrame]) -> list[str]:
    """The spread of step time across allocators over the steps that every allocator ran with
    the same batch (SAME_BATCH equal; an allocator's median where it ran that batch more than
    once), per kind: how many, and the median and largest (max - min) / min, over every
    allocator and over all but static (which reserves max_model_len per request and runs other
    batches). The bins' ratios compare each allocator's own mix of batches; this compares like
    with like."""
    key = list(SAME_BATCH)
    merged = None
    for name, log in logs.items():
        times = log.groupby(key).step_s.median().rename(name).reset_index()
        merged = times if merged is None else merged.merge(times, on=key)
    if len(logs) < 2 or merged.empty:
        return []
    mixed = (merged.prefill_tokens + merged.verify_tokens > 0).to_numpy()
    groups = [("every allocator", list(logs)),
              ("all but static", [name for name in logs if name != "static"])]
    notes = []
    for kind, rows in (("decode", merged[~mixed]), ("mixed", merged[mixed])):
        if rows.empty:
            continue
        parts = []
        for label, names in groups:
            if len(names) > 1:
                spread = rows[names].max(axis=1) / rows[names].min(axis=1) - 1
                parts.append(f"{label} median {100 * spread.median():.1f}%, largest "
                             f"{100 * spread.max():.1f}%")
        notes.append(f"same batch, {kind}: {len(rows)} batches every allocator ran; spread "
                     + "; ".join(parts))
    return notes


def spread_notes(rows: list[dict]) -> list[str]:
    """Per bin, the spread of the floor ratio across allocators: (max - min) / min."""
    frame = pd.DataFrame(rows)
    notes = []
    for (kind, label), group in frame.groupby(["kind", "bin"], sort=False):
        if len(group) > 1:
            spread = group.ratio.max() / group.ratio.min() - 1
            notes.append(f"{kind} {label}: ratio {group.ratio.min():.2f}-{group.ratio.max():.2f}, "
                         f"spread across allocators {100 * spread:.1f}%")
    return notes
