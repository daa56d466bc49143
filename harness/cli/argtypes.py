"""argparse `type=` functions: a bad number or name on the command line is a usage error.

argparse turns an ArgumentTypeError into `kvharness CMD: error: argument --flag: MESSAGE` and
exit status 2, so a value that would only fail deep inside a run (a NaN summary, a ValueError
traceback) is refused before anything starts. Each message says what the value must be and
repeats what was given; argparse names the flag.

Imports nothing heavy at module level: the subcommand modules import this one when the parser is
built, and `kvharness trace` must stay cheap to start.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def _finite(text: str, wanted: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number {wanted}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (rates, times, SLOs)."""
    value = _finite(text, "> 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (sizes where 0 means none)."""
    value = _finite(text, ">= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A share of a whole in (0, 1] (gpu_memory_utilization)."""
    value = _finite(text, "in (0, 1]")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}")
    return value


def probability(text: str) -> float:
    """A chance in [0, 1] (speculative-token acceptance)."""
    value = _finite(text, "in [0, 1]")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def positive_ints(text: str) -> tuple[int, ...]:
    """A comma-separated list of integers >= 1; empty text is the empty list."""
    try:
        return tuple(positive_int(item) for item in _items(text))
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} in {text!r}") from None


def unique_names(text: str) -> tuple[str, ...]:
    """A comma-separated list in which no name repeats (each names an output of its own)."""
    names = _items(text)
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    for i, name in enumerate(names):
        if name in names[:i]:
            raise argparse.ArgumentTypeError(f"{name!r} is listed twice in {text!r}")
    return names


def allocator_names(text: str) -> tuple[str, ...]:
    """A comma-separated list of distinct registered allocators, checked whole before any run."""
    from allocators import SPECS

    names = unique_names(text)
    for name in names:
        if name not in SPECS:
            raise argparse.ArgumentTypeError(
                f"unknown allocator {name!r}; choose from {', '.join(SPECS)}"
            )
    return names


def allocator_name(text: str) -> str:
    """Exactly one registered allocator."""
    names = allocator_names(text)
    if len(names) != 1:
        raise argparse.ArgumentTypeError(f"expected one allocator, got {text!r}")
    return names[0]


def trace_format(text: str) -> str:
    """A trace format the workloads readers know."""
    from workloads.formats import FORMATS

    if text not in FORMATS:
        raise argparse.ArgumentTypeError(
            f"unknown trace format {text!r}; choose from {', '.join(FORMATS)}"
        )
    return text


def _items(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())
