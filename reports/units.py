"""Number formatting shared by the report's text, tables and verdict, so that one figure reads
the same everywhere it appears."""
from __future__ import annotations

import math


def is_number(value: float | None) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def pct(share: float | None, digits: int = 0) -> str:
    """0.623 -> '62%'."""
    return f"{share * 100:.{digits}f}%" if is_number(share) else "n/a"


def seconds(value: float | None) -> str:
    """A duration with a unit that keeps 2-3 significant digits: '850 ms', '1.25 s', '3.4 min'."""
    if not is_number(value):
        return "n/a"
    if value < 1e-3:
        return f"{value * 1e6:.0f} us"
    if value < 1:
        return f"{value * 1e3:.3g} ms"
    if value < 120:
        return f"{value:.3g} s"
    return f"{value / 60:.3g} min"


def count(value: float | None, digits: int = 0) -> str:
    if not is_number(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def gib(num_bytes: float | None) -> str:
    return f"{num_bytes / 2**30:.1f} GiB" if is_number(num_bytes) else "n/a"
