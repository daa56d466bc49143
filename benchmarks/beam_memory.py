"""Memory saved by sharing under beam search, per allocator and beam width: the vLLM paper's
figure (37-55% for beam widths 2-6 on Alpaca/OPT-13B) on our traces.

    python benchmarks/beam_memory.py --trace azure-conv --requests 1000 --widths 2,4,6

Each cell simulates the trace with every request searching over W beams and reports
1 - live / logical KV, time-weighted over the run's steps (reports.sharing.memory_saved): the
share of the KV that the sequences address which sharing keeps from being stored twice. Beam
scores are modelled (harness.engine.decoding), seeded by --seed. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import dataclasses

from allocators import SPECS
from harness.engine.loop import simulate
from harness.model.config import AllocatorConfig, RunConfig
from reports.sharing import memory_saved
from workloads import TraceSpec


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", default="azure-conv")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rate-scale", type=float, default=1.0)
    parser.add_argument("--widths", type=_ints, default=[2, 4, 6])
    parser.add_argument("--allocators", default=",".join(SPECS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    base = TraceSpec(args.trace, max_requests=args.requests, rate_scale=args.rate_scale)
    names = args.allocators.split(",")
    rows = {}
    for width in args.widths:
        trace = dataclasses.replace(base, beam_width=width).load()
        for name in names:
            config = RunConfig(allocator=AllocatorConfig(name), seed=args.seed)
            result = simulate(config, trace)
            rows[name, width] = (memory_saved(result.steps), result.summary)
    print(f"memory saved = 1 - live / logical (time-weighted); {args.trace}, first "
          f"{args.requests} requests, rate x{args.rate_scale:g}, seed {args.seed}\n")
    print("| allocator | " + " | ".join(f"W={w}" for w in args.widths) + " |")
    print("|---|" + "---|" * len(args.widths))
    for name in names:
        cells = [f"{rows[name, w][0]:.1%}" for w in args.widths]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
