"""Speculative decoding on the device: the measured cost of verification and rollback, and of a
small random-weight draft model, against plain decoding of the same requests.

    python benchmarks/bench_spec_decode.py --model llama3-8b --draft llama3.2-1b \
        --allocator paged --requests 64 --spec-tokens 0,2,4,8 --spec-accept 0.8 \
        --out benchmarks/results

For each k the trace slice replays through the GPU executor (the engine, allocator and
scheduler of a simulated run) with every request drafting k tokens a step (k = 0: plain
decoding). Verification writes k + 1 slots per sequence and the rejected ones are rolled back
with the allocator's truncate; the executor's tables shrink with them. The draft model's cost is
measured apart: the same slice decoded plainly by the draft shape gives its seconds per decode
step, and a step of k drafts costs k of them. Writes spec_decode_<model>_<device>.csv with one
row per k: steps, output tokens, target seconds, draft seconds, tokens per second.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def _run(model: str, allocator: str, trace, device, dtype: str, budget_slots: int | None):
    from harness.gpu.executor import build_decoder
    from harness.gpu.run import run_on_device
    from harness.gpu.setup import gpu_run_config

    config = gpu_run_config(device, model=model, allocator=allocator, budget_slots=budget_slots)
    decoder = build_decoder(config.model, device=device, dtype=dtype, seed=config.seed)
    result, executor = run_on_device(config, trace, decoder)
    return result, executor.details


def main() -> None:
    import torch

    from harness.gpu.setup import device_name, load_slice
    from workloads.transforms import set_decoding

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", default="azure-conv")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--model", default="llama3-8b")
    parser.add_argument("--draft", default="llama3.2-1b")
    parser.add_argument("--allocator", default="paged")
    parser.add_argument("--spec-tokens", type=_ints, default=[0, 2, 4, 8])
    parser.add_argument("--spec-accept", type=float, default=0.8)
    parser.add_argument("--budget-slots", type=int)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = load_slice(args.trace, count=args.requests, max_model_len=args.max_model_len)
    draft, draft_details = _run(args.draft, args.allocator, base, device, args.dtype,
                                args.budget_slots)
    draft_step_s = draft_details["device_s"] / max(draft_details["steps"], 1)
    rows = []
    for k in args.spec_tokens:
        trace = set_decoding(base, spec_tokens=k, spec_accept=args.spec_accept) if k else base
        result, details = _run(args.model, args.allocator, trace, device, args.dtype,
                               args.budget_slots)
        drafting = result.steps["decode_tokens"] > result.steps["running"]
        draft_s = k * draft_step_s * int(drafting.sum())
        target_s = details["device_s"]
        tokens = result.summary["output_tokens"]
        rows.append({
            "spec_tokens": k, "spec_accept": args.spec_accept if k else 0.0,
            "steps": details["steps"], "output_tokens": tokens,
            "target_s": round(target_s, 6), "draft_s": round(draft_s, 6),
            "tok_s": round(tokens / (target_s + draft_s), 1),
            "copied_blocks": details["copied_blocks"],
        })
        print(rows[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    slug = device_name(device).lower().replace(" ", "-")
    path = args.out / f"spec_decode_{args.model}_{slug}.csv"
    with open(path, "w", newline="") as fh:
        fh.write(f"# python benchmarks/bench_spec_decode.py --model {args.model} --draft "
                 f"{args.draft} --allocator {args.allocator} --requests {args.requests} "
                 f"--spec-tokens {','.join(map(str, args.spec_tokens))} --spec-accept "
                 f"{args.spec_accept}; draft step {draft_step_s:.6f} s\n")
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
