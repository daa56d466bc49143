"""Trace file formats: one reader module each, behind one small interface.

A reader module defines `FIELDS` (canonical column -> the file's own field name, for messages),
`chunk_tokens(options)` (tokens per prefix hash it produces, 0 for none) and
`read(source, options)`, which yields `screen.Rows` in file order: batches of about
`options.chunk_rows` rows, or exactly one batch for the whole file when chunk_rows is None.
Readers report lines they cannot parse as `screen.Problem`s; the shared checks live in screen.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from workloads.trace import FORMATS


@dataclass(frozen=True)
class ReadOptions:
    """How to read a file; the last three only matter where a format lacks that information."""

    chunk_rows: int | None = None  # rows per batch; None reads the whole file as one batch
    rate_per_s: float = 1.0  # synthetic Poisson arrival rate (ShareGPT has no timestamps)
    seed: int = 0  # seed of those synthetic arrivals
    chunk_tokens: int = 64  # tokens per synthetic prefix hash (ShareGPT multi-turn sharing)

    def __post_init__(self) -> None:
        if self.chunk_rows is not None and self.chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1 or None, got {self.chunk_rows}")
        if not self.rate_per_s > 0:
            raise ValueError(f"rate_per_s must be > 0, got {self.rate_per_s}")
        if self.chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1, got {self.chunk_tokens}")


def reader(name: str) -> ModuleType:
    """The reader module of a format name."""
    if name == "azure":
        from workloads.formats import azure as module
    elif name == "mooncake":
        from workloads.formats import mooncake as module
    elif name == "burstgpt":
        from workloads.formats import burstgpt as module
    elif name == "sharegpt":
        from workloads.formats import sharegpt as module
    else:
        raise ValueError(f"unknown trace format {name!r}; choose one of {', '.join(FORMATS)}")
    return module
