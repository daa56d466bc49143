"""Speculative decoding on the device: what verification and rollback cost against plain decoding
of the same requests and against the hardware floor, the draft model's cost, and token equality.

    PYTHONPATH=. python benchmarks/bench_spec_decode.py --out "$OUT"        # on the GPU machine
    PYTHONPATH=. python benchmarks/bench_spec_decode.py --model tiny --draft tiny \\
        --check-model tiny --requests 4 --max-model-len 256 --device cpu --dtype float32 \\
        --out /tmp/spec   # a CPU smoke run

The first --requests requests of the trace, all arriving at t = 0, are decoded greedily by the
target (--model, random weights) on one allocator: plainly (k = 0), then for each k of
--spec-tokens with k drafts a step, each accepted with chance --spec-accept up to the first
rejection (harness.engine.decoding), the rejected slots given back by the allocator's truncate.
The executor's target drafts for itself outside the timed step (harness.gpu.speculative), so
every run must give the plain run's tokens. That is checked first in float32 with IEEE matmuls
(--check-model on the first --check-requests requests, for every k): check_equal counts the
requests whose tokens equal plain decoding's, check_mismatches the verified tokens that differ
from their drafts, and the script fails, after writing the table, unless every request is equal
and no token differs. In the timed --dtype runs the same counts are tokens_equal and
draft_mismatches, recorded only: in bfloat16 a row's rounding depends on the batch it runs in
(different GEMM tiles, the decode and the chunked attention kernels), so near-tied greedy
choices may part.

Per k, over the verification steps without prefill work in them:
- verify_ms: median measured step (CUDA events: the step's memory operations and the verifying
  forward); plain_ms: median over those steps of the plain run's median decode-only step at the
  same batch (sequences), interpolated between the batch sizes the plain run had;
- floor_ms, floor_ratio: each step's floor (benchmarks/gpu_steps.py: every linear layer at
  batch x (k + 1) tokens and lm_head at as many sampled rows, torch.matmul timed here on a token
  grid, plus the KV bytes read at the copy bandwidth measured here; or weight and KV bytes at
  copy bandwidth where larger): the median floor and the median of measured / floor;
- rollback: host time per verification step of the allocator's truncate calls (timed around
  each call) and of the executor's token and table updates (its rollback_s), and their share of
  verify_ms; rollback's device work is block copies (copied_blocks, against the plain run's);
- the draft model: the --draft shape decodes the same requests plainly first; draft_s is its
  prefill steps plus, per verification step, the drafts per sequence times its median decode
  step at that batch. tok_s counts target and draft seconds; speedup is against the plain run.
Writes spec_decode_<model>_<gpu>.csv (its header: device, torch and triton versions, date,
command, ceilings, draft steps).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

import gpu_steps
from bench_gpu_decode import device_slug, free_device, header, write_csv
from harness.engine.loop import Engine
from harness.gpu.executor import GpuExecutor, build_decoder
from harness.gpu.run import run_on_device
from harness.gpu.setup import gpu_run_config, load_slice
from harness.model.presets import model_preset
from workloads import cap_lengths, take
from workloads.transforms import set_decoding

COLUMNS = (
    "spec_tokens", "spec_accept", "requests", "tokens_equal", "draft_mismatches",
    "output_tokens", "steps", "verify_steps", "verify_batch", "verify_ms", "plain_ms",
    "verify_over_plain", "floor_ms", "floor_ratio", "allocator_truncate_us",
    "executor_rollback_us", "rollback_share", "copied_blocks", "target_s", "draft_s", "tok_s",
    "speedup", "check_equal", "check_mismatches", "wall_s",
)


@dataclass(frozen=True)
class Run:
    """One replay of the slice by the target: its step log, each request's tokens, the
    executor's details and the seconds the allocator's truncate calls took."""

    log: pd.DataFrame
    tokens: list[list[int]]
    output_tokens: int
    details: dict
    truncate_s: float
    wall_s: float


@dataclass(frozen=True)
class DraftCost:
    """The draft model's measured cost: its median decode-only step by batch, its prefill."""

    decode_s: Callable[[np.ndarray], np.ndarray]
    prefill_s: float

    def of(self, verifying: pd.DataFrame) -> float:
        """Seconds the draft spends on a run's verification steps: its prefills, then per step
        the drafts per sequence, each a decode step at that step's batch."""
        drafts = (verifying.verify_tokens - verifying.verify_seqs) / verifying.verify_seqs
        batch = (verifying.verify_seqs + verifying.decode_seqs).to_numpy(float)
        return self.prefill_s + float(np.sum(drafts.to_numpy() * self.decode_s(batch)))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def replay(config, trace, decoder) -> Run:
    """The engine run on the device, the allocator's truncate timed around each call."""
    t0 = time.perf_counter()
    engine = Engine(config, trace, executor_factory=lambda cfg, geometry: GpuExecutor(
        cfg, geometry, decoder=decoder, trace=trace))
    allocator = engine.allocator
    truncate, spent = allocator.truncate, []

    def timed(seq_id: int, num_tokens: int) -> None:
        t = time.perf_counter()
        truncate(seq_id, num_tokens)
        spent.append(time.perf_counter() - t)

    allocator.truncate = timed
    result = engine.run()
    if not (result.requests.status == "completed").all():
        raise SystemExit("not every request completed: give the run more --budget-slots")
    executor = engine.executor
    outputs = executor.outputs()
    tokens = [outputs[rid][:n] for rid, n in enumerate(trace.output_tokens.tolist())]
    run = Run(executor.step_log.frame(), tokens, int(result.summary["output_tokens"]),
              executor.details, sum(spent), time.perf_counter() - t0)
    del engine, executor
    free_device()
    return run


def decode_step_s(log: pd.DataFrame) -> Callable[[np.ndarray], np.ndarray]:
    """Median decode-only step time per batch size, as a function of batch (interpolated)."""
    plain = log[(log.prefill_tokens == 0) & (log.verify_seqs == 0)]
    medians = plain.groupby("decode_seqs").step_s.median()
    sizes, seconds = medians.index.to_numpy(float), medians.to_numpy()
    return lambda batch: np.interp(batch, sizes, seconds)


def warm_decoder(args, model: str, trace, dtype: str | None = None):
    """The model's decoder, after an untimed short run (library start-up is no step's work)."""
    decoder = build_decoder(model_preset(model), device=args.device, dtype=dtype or args.dtype)
    run_on_device(run_config(args, model), cap_lengths(take(trace, 2), 64), decoder)
    return decoder


def run_config(args, model: str):
    return gpu_run_config(args.device, model=model, allocator=args.allocator,
                          budget_slots=args.budget_slots)


def measure_draft(args, trace) -> DraftCost:
    """The draft shape decodes the slice plainly; its decoder is freed after."""
    decoder = warm_decoder(args, args.draft, trace)
    log = replay(run_config(args, args.draft), trace, decoder).log
    del decoder
    free_device()
    return DraftCost(decode_step_s(log), float(log.step_s[log.prefill_tokens > 0].sum()))


def check_tokens(args, trace) -> dict[int, dict]:
    """Per k, the float32 check: requests whose tokens equal plain decoding's, and verified
    tokens that differ from their drafts."""
    requests = take(trace, args.check_requests)
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    decoder = warm_decoder(args, args.check_model, requests, dtype="float32")
    config = run_config(args, args.check_model)
    plain = replay(config, requests, decoder)
    checks = {}
    for k in args.spec_tokens:
        run = replay(config, set_decoding(requests, spec_tokens=k, spec_accept=args.spec_accept),
                     decoder)
        checks[k] = {"check_equal": sum(a == b for a, b in zip(run.tokens, plain.tokens)),
                     "check_mismatches": run.details["draft_mismatches"]}
    del decoder
    free_device()
    torch.backends.cuda.matmul.allow_tf32 = matmul
    return checks


def verify_figures(run: Run, plain: Run, ceilings, draft: DraftCost) -> dict:
    """The verification-step columns of a speculative run (steps with prefill work in them
    left out of the per-step medians)."""
    log = run.log
    verifying = log[log.verify_seqs > 0]
    clean = verifying[verifying.prefill_tokens == 0]
    steps = max(len(verifying), 1)
    rollback_s = (run.truncate_s + float(log.rollback_s.sum())) / steps
    figures = {"verify_steps": len(verifying), "draft_s": draft.of(verifying),
               "allocator_truncate_us": run.truncate_s / steps * 1e6,
               "executor_rollback_us": float(log.rollback_s.sum()) / steps * 1e6}
    if clean.empty:
        return figures
    batch = (clean.verify_seqs + clean.decode_seqs).to_numpy(float)
    measured = clean.step_s.to_numpy()
    floors = gpu_steps.floor_s(clean, ceilings)
    plain_s = decode_step_s(plain.log)(batch)
    return figures | {
        "verify_batch": float(np.median(batch)),
        "verify_ms": float(np.median(measured)) * 1e3,
        "plain_ms": float(np.median(plain_s)) * 1e3,
        "verify_over_plain": float(np.median(measured / plain_s)),
        "floor_ms": float(np.median(floors)) * 1e3,
        "floor_ratio": float(np.median(measured / floors)),
        "rollback_share": rollback_s / float(np.median(measured)),
    }


def row_of(k: int, args, run: Run, plain: Run, ceilings, draft: DraftCost,
           check: dict) -> dict:
    row = dict.fromkeys(COLUMNS, "")
    row.update({"draft_s": 0.0, "spec_tokens": k, "spec_accept": args.spec_accept if k else 0.0})
    if k:
        row.update(verify_figures(run, plain, ceilings, draft) | check)
    row.update({
        "requests": len(run.tokens),
        "tokens_equal": sum(a == b for a, b in zip(run.tokens, plain.tokens)),
        "draft_mismatches": run.details["draft_mismatches"],
        "output_tokens": run.output_tokens, "steps": run.details["steps"],
        "copied_blocks": run.details["copied_blocks"], "target_s": run.details["device_s"],
        "tok_s": run.output_tokens / (run.details["device_s"] + row["draft_s"]),
        "wall_s": run.wall_s,
    })
    plain_tok_s = plain.output_tokens / plain.details["device_s"]
    row["speedup"] = row["tok_s"] / plain_tok_s
    return row


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(os.environ.get("OUT", "benchmarks/results")))
    parser.add_argument("--trace", default="azure-conv")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--model", default="llama3-8b")
    parser.add_argument("--draft", default="llama3.2-1b")
    parser.add_argument("--allocator", default="paged")
    parser.add_argument("--spec-tokens", type=_ints, default=[2, 4, 8])
    parser.add_argument("--spec-accept", type=float, default=0.8)
    parser.add_argument("--budget-slots", type=int, default=131072,
                        help="KV slots of every run (the draft's decoder is freed first)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--check-model", default="llama3.2-1b",
                        help="the shape of the float32 token check")
    parser.add_argument("--check-requests", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    args.device = torch.device(args.device)
    return args


def main() -> int:
    args = parse_args()
    command = "python benchmarks/bench_spec_decode.py " + " ".join(sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"spec_decode_{args.model}_{device_slug(args.device)}.csv"
    started = time.perf_counter()
    trace = load_slice(args.trace, count=args.requests, max_model_len=args.max_model_len)
    trace["arrival_s"] = 0.0
    checks = check_tokens(args, trace)
    print(f"float32 check ({args.check_model}, {args.check_requests} requests): {checks}",
          flush=True)
    draft = measure_draft(args, trace)
    target = warm_decoder(args, args.model, trace)
    ceilings = gpu_steps.measure_ceilings(target)
    lines = header(args.device, command) + [
        f"# trace: {args.trace} requests [0, {len(trace)}) all at t=0, lengths capped at "
        f"{args.max_model_len}; {args.model} drafting with {args.draft}, {args.dtype} random "
        f"weights; {args.allocator}, {args.budget_slots} KV slots; greedy",
        f"# ceilings: copy {ceilings.copy_bytes_s / 1e12:.3f} TB/s (read + write); linear "
        f"layers {ceilings.layers_s[0] * 1e3:.3f} ms at 1 token, "
        f"{ceilings.layers_s[6] * 1e3:.3f} ms at {gpu_steps.TOKEN_GRID[6]} (torch.matmul)",
        f"# draft {args.draft}: median decode-only step {draft.decode_s(1.0) * 1e3:.3f} ms at "
        f"batch 1, {draft.decode_s(float(len(trace))) * 1e3:.3f} ms at {len(trace)}; prefill "
        f"steps {draft.prefill_s:.3f} s",
        f"# check: {args.check_model} in float32 (no TF32) on requests [0, "
        f"{min(args.check_requests, len(trace))}): tokens against plain decoding's",
    ]
    print(*lines[-2:], sep="\n", flush=True)
    rows, plain = [], None
    for k in [0, *args.spec_tokens]:
        spec = set_decoding(trace, spec_tokens=k, spec_accept=args.spec_accept) if k else trace
        run = replay(run_config(args, args.model), spec, target)
        plain = plain or run
        rows.append(row_of(k, args, run, plain, ceilings, draft, checks.get(k, {})))
        print({c: round(v, 4) if isinstance(v, float) else v for c, v in rows[-1].items()},
              flush=True)
        write_csv(path, lines, rows, COLUMNS)
    print(f"total {time.perf_counter() - started:.0f} s -> {path}", flush=True)
    wrong = {k: c for k, c in checks.items()
             if c["check_equal"] != min(args.check_requests, len(trace)) or c["check_mismatches"]}
    if wrong:
        raise SystemExit(f"speculative decoding changed the float32 tokens: {wrong}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
