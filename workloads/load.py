"""Load a trace file or bundled trace as the canonical table, or stream its requests.

Both entry points run the same reader and the same checks, so `iter_requests` yields exactly the
rows of `load_trace`, while holding only one batch of `chunk_rows` rows at a time.

Order. Rows must already be in arrival order (the bundled Azure and Mooncake files are: no row is
earlier than the one before it). A row that arrives before an earlier row is an error, like any
other invalid row; with skip_invalid=True it is dropped and listed in attrs["skipped_rows"], never
silently reordered, since a replay of a reordered trace would not be the recorded traffic.

Nothing is dropped silently: load_trace lists every row skip_invalid dropped, as (line, reason), in
attrs["skipped_rows"]; iter_requests appends them to the `skipped_rows` list its caller gives.
The CLI's --format and --skip-invalid are these functions' format= and skip_invalid=.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd

from workloads.formats import ReadOptions, reader
from workloads.screen import Rows, Screen
from workloads.sources import Source, detect_format, resolve
from workloads.trace import Request, frame_requests, make_trace

STREAM_CHUNK_ROWS = 65536


def load_trace(
    source: str | Path,
    *,
    format: str | None = None,
    skip_invalid: bool = False,
    rate_per_s: float = 1.0,
    seed: int = 0,
    chunk_tokens: int = 64,
) -> pd.DataFrame:
    """The canonical trace (see workloads.trace) of a file or a bundled name ("azure-conv").

    format: "azure" | "mooncake" | "burstgpt" | "sharegpt"; detected from the content if None.
    skip_invalid: drop invalid rows and list them in attrs["skipped_rows"] instead of raising.
    rate_per_s, seed, chunk_tokens: synthetic arrivals and prefix chunks for ShareGPT, which has
    neither; ignored by the other formats.
    Raises TraceError (naming file, line, field and value) for the first invalid row.
    """
    options = ReadOptions(None, rate_per_s, seed, chunk_tokens)
    with resolve(source) as src:
        fmt, module, screen = _prepare(src, format, skip_invalid)
        (rows,) = [screen(batch) for batch in module.read(src, options)]
        first_s = rows.time_s[0] if len(rows.time_s) else 0.0
        hashed = rows.prefix_hashes is not None
        return make_trace(
            arrival_s=rows.time_s - first_s,
            prompt_tokens=rows.prompt_tokens,
            output_tokens=rows.output_tokens,
            n=rows.n,
            prefix_hashes=rows.prefix_hashes,
            failed=rows.failed,
            attrs={
                "name": src.name,
                "source": src.display,
                "format": fmt,
                "chunk_tokens": module.chunk_tokens(options) if hashed else 0,
                "skipped_rows": screen.skipped,
            },
        )


def iter_requests(
    source: str | Path | pd.DataFrame,
    *,
    format: str | None = None,
    skip_invalid: bool = False,
    rate_per_s: float = 1.0,
    seed: int = 0,
    chunk_tokens: int = 64,
    chunk_rows: int = STREAM_CHUNK_ROWS,
    skipped_rows: list[tuple[int, str]] | None = None,
) -> Iterator[Request]:
    """The requests of load_trace(source, ...) one at a time, reading chunk_rows rows at once.

    skipped_rows: a list that receives (line, reason) of each row skip_invalid drops, as the
    reading passes it (load_trace's attrs["skipped_rows"], for a stream).
    A DataFrame (a canonical trace, e.g. from workloads.generate) is streamed as it is.
    """
    if isinstance(source, pd.DataFrame):
        yield from frame_requests(source)
        return
    options = ReadOptions(chunk_rows, rate_per_s, seed, chunk_tokens)
    with resolve(source) as src:
        _, module, screen = _prepare(src, format, skip_invalid, skipped_rows)
        next_id = 0
        first_s = None
        for batch in module.read(src, options):
            rows = screen(batch)
            if not len(rows.time_s):
                continue
            if first_s is None:
                first_s = rows.time_s[0]
            yield from _requests(rows, next_id, first_s)
            next_id += len(rows.time_s)


def _prepare(
    src: Source, format: str | None, skip_invalid: bool,
    skipped_rows: list[tuple[int, str]] | None = None,
):
    fmt = format if format is not None else detect_format(src)
    module = reader(fmt)
    screen = Screen(src.display, module.FIELDS, skip_invalid=skip_invalid, skipped=skipped_rows)
    return fmt, module, screen


def _requests(rows: Rows, first_id: int, first_s: float) -> Iterator[Request]:
    hashes = rows.prefix_hashes if rows.prefix_hashes is not None else [None] * len(rows.time_s)
    columns = (
        range(first_id, first_id + len(rows.time_s)),
        (rows.time_s - first_s).tolist(),
        rows.prompt_tokens.tolist(),
        rows.output_tokens.tolist(),
        rows.n.tolist(),
        hashes,
        rows.failed.tolist(),
    )
    for values in zip(*columns):
        yield Request(*values)
