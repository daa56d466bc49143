"""The canonical trace: the one table every loader, generator and transform produces.

A trace is a pandas DataFrame with these columns, in this order:

    request_id     int64    0..N-1 in arrival order (requests arriving together keep file order)
    arrival_s      float64  seconds since the first request (the first is 0.0), non-decreasing
    prompt_tokens  int64    >= 1
    output_tokens  int64    >= 1, or 0 for a failed response (then failed is True)
    n              int64    >= 1: parallel samples / beam width (1 where the format has none)
    prefix_hashes  object   tuple[int, ...] of chunk hashes, or None
    failed         bool     the response failed (BurstGPT rows with 0 response tokens)
    beam_width     int64    >= 1: beam search over this many beams (1: no beam search)
    spec_tokens    int64    >= 0: draft tokens per step of speculative decoding (0: none)
    spec_accept    float64  in [0, 1]: chance that the target accepts each draft token

The last three describe how a request decodes; no file format carries them, so a loaded trace has
1, 0 and 0.0 until transforms.set_decoding or a generator sets them.

prefix_hashes: hash i stands for prompt tokens [i * chunk_tokens, (i + 1) * chunk_tokens), the last
chunk may be partial. Two requests with equal hashes at positions 0..i hold the same tokens there,
so those chunks are a reusable prefix (allocators.prefix.block_keys turns them into cache keys).

and these attrs (df.attrs):

    name          str   bundled name ("azure-conv"), file stem, or the generator's name
    source        str   file path, "workloads/data/<file>" for bundled data, or the generator spec
    format        str   "azure" | "mooncake" | "burstgpt" | "sharegpt" | "synthetic"
    chunk_tokens  int   tokens per prefix hash (512 for Mooncake); 0 when there are no hashes
    skipped_rows  list  (line, reason) of every row dropped by skip_invalid=True, in file order
    transforms    list  what workloads.transforms did to it, in order (absent if nothing)
    capped        dict  max_model_len, prompts, outputs: set by transforms.cap_lengths

`Request` is one row of that table, as `workloads.iter_requests` streams it.
"""
from __future__ import annotations

from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import pandas as pd

COLUMNS = (
    "request_id",
    "arrival_s",
    "prompt_tokens",
    "output_tokens",
    "n",
    "prefix_hashes",
    "failed",
    "beam_width",
    "spec_tokens",
    "spec_accept",
)

# Hints name the CLI flags first (most readers of these messages ran kvharness), then the keyword
# arguments of load_trace and iter_requests that the flags set.
SKIP_HINT = (
    "pass --skip-invalid (skip_invalid=True) to drop invalid rows; they are counted and listed"
)
FORMATS = ("azure", "mooncake", "burstgpt", "sharegpt")
FORMAT_HINT = f"name the format with --format {'|'.join(FORMATS)} (format=...)"

NO_VALUE = object()  # a TraceError or Problem about something that has no value to show


class TraceError(ValueError):
    """A trace file that cannot be read as a trace: names the file, line, field and value.

    hint: what the user can do about it, said after the rest (e.g. SKIP_HINT).
    """

    def __init__(
        self, path: str, line: int, field: str, reason: str, value: Any = NO_VALUE,
        *, hint: str = "",
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.reason = reason
        self.value = None if value is NO_VALUE else value
        self.hint = hint
        message = f"{path}, line {line}, field {field!r}: {reason}"
        if value is not NO_VALUE:
            message += f" (got {_short(value)})"
        if hint:
            message += f"; {hint}"
        super().__init__(message)


class Request(NamedTuple):
    """One request of a trace; the fields are the trace's columns."""

    request_id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    n: int
    prefix_hashes: tuple[int, ...] | None
    failed: bool
    beam_width: int = 1
    spec_tokens: int = 0
    spec_accept: float = 0.0


def make_trace(
    *,
    arrival_s: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    n: np.ndarray,
    prefix_hashes: Sequence[tuple[int, ...] | None] | None,
    failed: np.ndarray,
    attrs: dict,
    beam_width: np.ndarray | None = None,
    spec_tokens: np.ndarray | None = None,
    spec_accept: np.ndarray | None = None,
) -> pd.DataFrame:
    """Assemble a canonical trace from columns already in arrival order and already valid
    (the decoding columns default to plain sampling)."""
    rows = len(arrival_s)
    if prefix_hashes is None:
        hashes = np.full(rows, None, dtype=object)
    else:
        hashes = np.fromiter(prefix_hashes, dtype=object, count=rows)
    frame = pd.DataFrame(
        {
            "request_id": np.arange(rows, dtype=np.int64),
            "arrival_s": np.asarray(arrival_s, dtype=np.float64),
            "prompt_tokens": np.asarray(prompt_tokens, dtype=np.int64),
            "output_tokens": np.asarray(output_tokens, dtype=np.int64),
            "n": np.asarray(n, dtype=np.int64),
            "prefix_hashes": hashes,
            "failed": np.asarray(failed, dtype=bool),
            "beam_width": _column(beam_width, rows, 1, np.int64),
            "spec_tokens": _column(spec_tokens, rows, 0, np.int64),
            "spec_accept": _column(spec_accept, rows, 0.0, np.float64),
        }
    )
    frame.attrs.update(
        {
            "name": attrs["name"],
            "source": attrs["source"],
            "format": attrs["format"],
            "chunk_tokens": int(attrs.get("chunk_tokens", 0)),
            "skipped_rows": list(attrs.get("skipped_rows", [])),
        }
    )
    return frame


def _column(values: np.ndarray | None, rows: int, default, dtype) -> np.ndarray:
    if values is None:
        return np.full(rows, default, dtype=dtype)
    return np.asarray(values, dtype=dtype)


def frame_requests(trace: pd.DataFrame) -> Iterator[Request]:
    """Yield the rows of a canonical trace as Requests with plain Python values."""
    columns = [trace[name].tolist() for name in COLUMNS]
    for values in zip(*columns):
        yield Request(*values)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
