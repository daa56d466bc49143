"""GPU benchmark of what fp8 KV costs in accuracy: a decoder with random weights at a real shape
(llama3.2-1b by default, bf16), a few prompts, greedy decoding over an fp8 (e4m3) KV cache
against the same decoder over a bf16 cache (harness/gpu/kv_accuracy.py).

Both runs go through the executor's own path: the paged prefill, decode and KV-write kernels, an
fp8 pool with per-layer, per-head scales calibrated as `kvharness gpu --kv-dtype fp8` calibrates
them (harness/gpu/calibration.py). The fp8 run is fed the bf16 run's tokens, so every step
compares the same context: per prompt, the max abs error of every layer's attention output and
of the logits, the share of the greedy tokens fp8 agrees on, and the first it does not (where
free-running fp8 generation would part from bf16). Writes fp8_accuracy_<device>.csv
(reports/schema.py KV_ACCURACY_COLUMNS), which the report's FP8 KV page reads:

    PYTHONPATH=. python benchmarks/bench_fp8_accuracy.py --out benchmarks/results
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bench_gpu_decode import device_slug, header, write_csv
from harness.gpu.calibration import CALIBRATION_PROMPTS, CALIBRATION_TOKENS
from harness.gpu.executor import build_decoder
from harness.gpu.kv_accuracy import kv_dtype_accuracy
from harness.gpu.prompts import prompt_tokens
from harness.model.presets import model_preset
from reports.schema import KV_ACCURACY_COLUMNS


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama3.2-1b")
    parser.add_argument("--prompts", type=_ints, default=[256, 1024, 4096, 8192],
                        help="prompt lengths, one prompt each")
    parser.add_argument("--steps", type=int, default=256, help="greedy tokens per prompt")
    parser.add_argument("--dtype", default="bfloat16", help="the decoder's (and bf16 cache's)")
    parser.add_argument("--seed", type=int, default=0, help="weights, prompts and calibration")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    device = torch.device(args.device)
    model = model_preset(args.model)
    decoder = build_decoder(model, device=device, dtype=args.dtype, seed=args.seed)
    prompts = [prompt_tokens(i, n, model.vocab_size, seed=args.seed)
               for i, n in enumerate(args.prompts)]
    started = time.perf_counter()
    seqs = kv_dtype_accuracy(decoder, prompts, args.steps, kv_dtype="fp8", seed=args.seed)
    rows = [{"model": args.model, **vars(seq)} for seq in seqs]
    for row in rows:
        first = row["first_divergence"]
        print(f"{row['prompt_tokens']:6d} prompt tokens: attention max abs err "
              f"{row['attention_max_abs_err']:.3g} (of {row['attention_max_abs']:.3g}), logits "
              f"{row['logits_max_abs_err']:.3g} (of {row['logits_max_abs']:.3g}); "
              f"{row['token_agreement']:.1%} of {row['steps']} greedy tokens agree, the first "
              f"difference at {'no step' if first == row['steps'] else f'step {first}'}",
              flush=True)
    command = "PYTHONPATH=. python " + " ".join(sys.argv)
    notes = [f"# note: {args.model} random weights ({args.dtype}, seed {args.seed}); fp8 e4m3 "
             f"cache, per-head scales amax / 448 of a {CALIBRATION_PROMPTS} x "
             f"{CALIBRATION_TOKENS}-token calibration prefill; reference: a {args.dtype} cache; "
             "teacher-forced with the reference's greedy tokens",
             f"# note: {time.perf_counter() - started:.0f} s for both runs"]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"fp8_accuracy_{device_slug(device)}.csv"
    write_csv(path, header(device, command) + notes, rows, KV_ACCURACY_COLUMNS)
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
