"""Mooncake traces (Qin et al., "Mooncake: Trading More Storage for Less Computation", FAST 2025):
one JSON object a line with timestamp (ms from the start), input_length, output_length and hash_ids.

hash_ids are remapped hashes of the prompt's 512-token blocks (the last may be partial): equal ids
at equal positions mean the same tokens, so they are the trace's prefix_hashes as they stand.
"""
from __future__ import annotations

from typing import Iterator

from workloads.formats import ReadOptions
from workloads.formats.jsontext import RowBuffer, finite_number, parse_line, whole_number
from workloads.screen import Problem, Rows
from workloads.sources import UTF8_BOM, Source
from workloads.trace import TraceError

BLOCK_TOKENS = 512
FIELDS = {
    "time_s": "timestamp",
    "prompt_tokens": "input_length",
    "output_tokens": "output_length",
    "n": "n",
}


def chunk_tokens(options: ReadOptions) -> int:
    """Mooncake hashes blocks of 512 tokens."""
    return BLOCK_TOKENS


def read(source: Source, options: ReadOptions) -> Iterator[Rows]:
    """Rows of a Mooncake JSONL file, in file order."""
    source.first_line()  # refuses UTF-16 and UTF-32 before any line is parsed
    buffer = RowBuffer(hashed=True)
    seen = 0
    with source.open() as handle:
        for line, raw in enumerate(handle, start=1):
            if line == 1:
                raw = raw.removeprefix(UTF8_BOM)
            if not raw.strip():
                continue
            seen += 1
            record = _record(parse_line(raw, line), line)
            if isinstance(record, Problem):
                buffer.problems.append(record)
            else:
                buffer.add(line, *record)
            if options.chunk_rows is not None and len(buffer) >= options.chunk_rows:
                yield buffer.take()
    if seen == 0:
        raise TraceError(source.display, 1, "timestamp", "the file is empty; expected JSON lines")
    yield buffer.take()


def _record(value: object, line: int) -> tuple | Problem:
    """(time_s, time_raw, prompt_tokens, output_tokens, hashes) of one line, or its Problem."""
    if isinstance(value, Problem):
        return value
    if not isinstance(value, dict):
        return Problem(line, "(line)", "not a JSON object", value)
    for name in ("timestamp", "input_length", "output_length", "hash_ids"):
        if name not in value:
            return Problem(line, name, "missing field", None)
    time_ms = finite_number(value["timestamp"])
    if time_ms is None:
        return Problem(line, "timestamp", "not a number of milliseconds", value["timestamp"])
    lengths = []
    for name in ("input_length", "output_length"):
        tokens = whole_number(value[name])
        if tokens is None:
            return Problem(line, name, "not a whole number", value[name])
        lengths.append(tokens)
    hashes = value["hash_ids"]
    if not isinstance(hashes, list) or not all(type(h) is int for h in hashes):
        return Problem(line, "hash_ids", "not a list of integers", hashes)
    blocks = -(-lengths[0] // BLOCK_TOKENS)  # ceil: the last block may be partial
    # A length below 1 is the screen's to report, under input_length.
    if lengths[0] >= 1 and len(hashes) > blocks:
        reason = (
            f"{len(hashes)} block hashes, but input_length {lengths[0]} fills only {blocks} "
            f"blocks of {BLOCK_TOKENS} tokens"
        )
        return Problem(line, "hash_ids", reason, hashes)
    return time_ms / 1000.0, value["timestamp"], lengths[0], lengths[1], tuple(hashes)
