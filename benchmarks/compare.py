"""The benchmark regression gate: compare a pytest-benchmark run with the committed baseline.

    python -m pytest tests/benchmarks -q --benchmark-enable --benchmark-json=bench.json
    python benchmarks/compare.py bench.json                 # exit 1 on a regression
    python benchmarks/compare.py bench.json again.json      # ... only if it shows in both
    python benchmarks/compare.py --update a.json b.json c.json  # rewrite the baseline
    python benchmarks/compare.py --spread a.json b.json c.json  # measure the machine's noise

The baseline (benchmarks/baseline.json) maps each benchmark's pytest-benchmark `fullname` to its
median time in seconds. `--update` writes, per benchmark, the median of the medians of the runs
given (pass three or more runs of the suite so that one noisy run does not set the bar).

The machine's speed is taken out first: the run's median over every benchmark of current /
baseline is the machine factor, and each benchmark's ratio is divided by it. A machine of this
kind ran the benchmarks 2.2-3.2x slower than the baseline's machine on 2026-11-30 (the median
over four runs of the suite; trace loading and simulations that no change had touched included):
read raw, one run gave 22 regressions, and a faster machine would hide real ones. Scaled, the
largest ratio of those four runs was 1.72x. The benchmarks cover unrelated code (trace loading,
allocator calls, simulations, the cluster), so a change slows a few of them, not their median.
A machine factor above MACHINE_LIMIT fails too: a machine that slow, or a change that slowed
everything, needs a look before anything lands.

A benchmark regresses when its scaled median is more than THRESHOLD slower than the baseline:
current / baseline / machine > 1 + THRESHOLD. Given several runs, a benchmark's current median
is its fastest: a regression must show in every run. .ci/run runs the suite a second time when
the first run fails the gate, because a 1-us allocator benchmark on a shared 2-core machine can
take three to four times its usual time for a whole run (test_extend_one_token[paged]: 0.7 us
in three runs in a row, 2.6 and 2.7 us in two CI runs that day, whose fastest rounds took 1.6
us). Only slowdowns fail; a benchmark that got faster, one that is new (not in the baseline) or
one the run did not produce is reported and passes, so adding or renaming a benchmark never
breaks CI (regenerate the baseline to start guarding it).

Why THRESHOLD = 1.5 (a benchmark fails only when its median exceeds 2.5x its baseline): the
noise was measured on this project's machine kind (2 cores) by running the suite five times in a
row and reading the spread of each benchmark's median across the runs:

    for i in 1 2 3 4 5; do
        python -m pytest tests/benchmarks -q --benchmark-enable --benchmark-json=run$i.json
    done
    python benchmarks/compare.py --spread run*.json

The machine was shared with other work at the time (load average 6-8 on 2 cores). The worst
max/min was 1.98x (16 benchmarks), from one run during which several micro-benchmarks ran at
half speed; without that run the worst was 1.55x (trace loading, which reads files), and most
benchmarks stayed within 1.1x. A gate at 2.5x stays quiet under that noise and still catches the
regressions worth catching here: an O(n) scan in a per-token path or a lost vectorization costs
5x to 100x. Measure again with --spread after adding benchmarks or moving CI to another machine
kind, and keep THRESHOLD above the worst spread. Three runs in a row on the slow machine of
2026-11-30 spread by up to 2.47x, all of it in allocator micro-benchmarks of 1-8 us.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

THRESHOLD = 1.5  # above the measured worst spread of 1.98x: see the module docstring
MACHINE_LIMIT = 5.0  # above the slowest machine of this kind seen (3.2x): see the docstring
DEFAULT_BASELINE = Path(__file__).with_name("baseline.json")


class BenchmarkFileError(ValueError):
    """A pytest-benchmark JSON or baseline file that cannot be read."""


def read_medians(path: Path) -> dict[str, float]:
    """fullname -> median seconds from a pytest-benchmark --benchmark-json file."""
    try:
        data = json.loads(Path(path).read_text())
        return {bench["fullname"]: float(bench["stats"]["median"])
                for bench in data["benchmarks"]}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise BenchmarkFileError(f"{path}: not a pytest-benchmark JSON file ({exc!r})") from exc


def read_baseline(path: Path) -> dict[str, float]:
    try:
        return {name: float(value) for name, value in json.loads(Path(path).read_text()).items()}
    except (OSError, json.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        raise BenchmarkFileError(f"{path}: not a baseline (name -> median seconds) ({exc!r})"
                                 ) from exc


def merged_medians(paths: list[Path]) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {}
    for path in paths:
        for name, median in read_medians(path).items():
            runs.setdefault(name, []).append(median)
    return runs


def compare(current: dict[str, float], baseline: dict[str, float], threshold: float
            ) -> tuple[list[str], list[str]]:
    """(report lines, names of regressed benchmarks; "machine" among them when the machine
    factor is over MACHINE_LIMIT)."""
    machine = machine_factor(current, baseline)
    regressed = ["machine"] if machine > MACHINE_LIMIT else []
    lines = [f"{'REGRESSED' if regressed else 'machine':<10} median current/baseline over the "
             f"benchmarks of both: {machine:.2f}x; every ratio below is divided by it"]
    for name in sorted(set(current) | set(baseline)):
        if name not in baseline:
            lines.append(f"new        {name}: {current[name] * 1e6:.1f} us (not in the baseline)")
            continue
        if name not in current:
            lines.append(f"missing    {name}: in the baseline, not in this run")
            continue
        ratio = current[name] / baseline[name] / machine
        verdict = "REGRESSED" if ratio > 1 + threshold else "ok"
        lines.append(f"{verdict:<10} {name}: {current[name] * 1e6:.1f} us vs "
                     f"{baseline[name] * 1e6:.1f} us baseline ({ratio:.2f}x scaled)")
        if verdict != "ok":
            regressed.append(name)
    return lines, regressed


def machine_factor(current: dict[str, float], baseline: dict[str, float]) -> float:
    """The median of current / baseline over the benchmarks in both (1 where none is)."""
    ratios = [current[name] / baseline[name] for name in current if name in baseline]
    return statistics.median(ratios) if ratios else 1.0


def spread_lines(runs: dict[str, list[float]]) -> list[str]:
    """Per benchmark: max/min and the relative spread of its median across runs."""
    lines = []
    for name, medians in sorted(runs.items()):
        low, high = min(medians), max(medians)
        lines.append(f"{high / low:5.2f}x  (median {statistics.median(medians) * 1e6:.1f} us "
                     f"over {len(medians)} runs)  {name}")
    worst = max((max(m) / min(m) for m in runs.values()), default=float("nan"))
    lines.append(f"worst max/min: {worst:.2f}x (the gate fails above {1 + THRESHOLD:.2f}x)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path,
                        help="pytest-benchmark --benchmark-json output file(s)")
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE,
                        help=f"baseline JSON (default {DEFAULT_BASELINE.name} beside this file)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help=f"allowed slowdown: fail when current/baseline > 1 + THRESHOLD "
                             f"(default {THRESHOLD})")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--update", action="store_true",
                      help="write the baseline from the median of the given runs")
    mode.add_argument("--spread", action="store_true",
                      help="print each benchmark's spread across the given runs and exit")
    args = parser.parse_args(argv)
    try:
        runs = merged_medians(args.results)
        if args.spread:
            print("\n".join(spread_lines(runs)))
            return 0
        if args.update:
            baseline = {name: statistics.median(m) for name, m in sorted(runs.items())}
            args.baseline.write_text(json.dumps(baseline, indent=2, sort_keys=True) + "\n")
            print(f"wrote {args.baseline} ({len(baseline)} benchmarks)")
            return 0
        current = {name: min(m) for name, m in runs.items()}
        lines, regressed = compare(current, read_baseline(args.baseline), args.threshold)
    except BenchmarkFileError as exc:
        print(f"compare.py: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    if regressed:
        print(f"{len(regressed)} benchmark(s) more than {args.threshold:.0%} slower than "
              f"{args.baseline}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
