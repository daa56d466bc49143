"""Azure LLM inference traces (Patel et al., Splitwise, ISCA 2024): CSV of
TIMESTAMP (wall time, up to 9 decimals of seconds), ContextTokens, GeneratedTokens.

The 2023 and 2024 releases share this schema. Timestamps without a zone are taken as UTC; only
differences between them matter. There are no prefix hashes and no parallel sampling (n = 1).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

from workloads.formats import ReadOptions
from workloads.formats.csvtable import (
    first_per_line,
    int_column,
    read_table,
    record_problems,
    require_columns,
)
from workloads.screen import Problem, Rows
from workloads.sources import Source

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
FIELDS = {
    "time_s": "TIMESTAMP",
    "prompt_tokens": "ContextTokens",
    "output_tokens": "GeneratedTokens",
    "n": "n",
}


def chunk_tokens(options: ReadOptions) -> int:
    """Azure traces carry no prefix hashes."""
    return 0


NS_FIRST = pd.Timestamp.min.tz_localize("UTC")
NS_LAST = pd.Timestamp.max.tz_localize("UTC")


def read(source: Source, options: ReadOptions) -> Iterator[Rows]:
    """Rows of an Azure CSV, in file order."""
    require_columns(source, COLUMNS)
    origin_ns = None  # the first readable timestamp: arrivals are seconds after it
    for table in read_table(source, COLUMNS, ("TIMESTAMP",), options.chunk_rows):
        frame, lines = table.frame, table.lines
        problems: list[Problem] = list(table.problems)
        stamps = pd.to_datetime(frame["TIMESTAMP"], format="ISO8601", errors="coerce", utc=True)
        # Arrivals are counted in nanoseconds: a date outside their range (year 0, say) is bad.
        bad_time = (stamps.isna() | (stamps < NS_FIRST) | (stamps > NS_LAST)).to_numpy()
        record_problems(
            frame["TIMESTAMP"], bad_time, "not a timestamp like 2023-11-16 18:15:46.6805900",
            "TIMESTAMP", lines, problems,
        )
        prompt, bad_prompt = int_column(frame, "ContextTokens", lines, problems)
        output, bad_output = int_column(frame, "GeneratedTokens", lines, problems)
        problems = first_per_line(problems)
        ok = ~(bad_time | bad_prompt | bad_output)
        ns = stamps[ok].dt.as_unit("ns").astype("int64").to_numpy()
        if origin_ns is None and len(ns):
            origin_ns = int(ns[0])
        yield Rows(
            lines=lines[ok],
            time_s=(ns - (origin_ns or 0)) / 1e9,
            time_raw=frame["TIMESTAMP"].to_numpy(dtype=object)[ok],
            prompt_tokens=prompt[ok],
            output_tokens=output[ok],
            n=np.ones(int(ok.sum()), dtype=np.int64),
            failed=np.zeros(int(ok.sum()), dtype=bool),
            prefix_hashes=None,
            problems=problems,
        )

