"""BurstGPT traces (Wang et al., "BurstGPT: A Real-world Workload Dataset to Optimize LLM Serving
Systems"): CSV of Timestamp (seconds from the start), Model, Request tokens, Response tokens,
Total tokens, Log Type.

Only Timestamp, Request tokens and Response tokens are read. A response of 0 tokens is a failed
request: it is kept, with failed=True, since it still arrived and was queued.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from workloads.formats import ReadOptions
from workloads.formats.csvtable import first_per_line, float_column, int_column, read_table
from workloads.formats.csvtable import require_columns
from workloads.screen import Problem, Rows
from workloads.sources import Source

COLUMNS = ("Timestamp", "Request tokens", "Response tokens")
FIELDS = {
    "time_s": "Timestamp",
    "prompt_tokens": "Request tokens",
    "output_tokens": "Response tokens",
    "n": "n",
}


def chunk_tokens(options: ReadOptions) -> int:
    """BurstGPT traces carry no prefix hashes."""
    return 0


def read(source: Source, options: ReadOptions) -> Iterator[Rows]:
    """Rows of a BurstGPT CSV, in file order."""
    require_columns(source, COLUMNS)
    for table in read_table(source, COLUMNS, (), options.chunk_rows):
        frame, lines = table.frame, table.lines
        problems: list[Problem] = list(table.problems)
        time_s, bad_time = float_column(frame, "Timestamp", lines, problems)
        prompt, bad_prompt = int_column(frame, "Request tokens", lines, problems)
        output, bad_output = int_column(frame, "Response tokens", lines, problems)
        ok = ~(bad_time | bad_prompt | bad_output)
        yield Rows(
            lines=lines[ok],
            time_s=time_s[ok],
            time_raw=frame["Timestamp"].to_numpy(dtype=object)[ok],
            prompt_tokens=prompt[ok],
            output_tokens=output[ok],
            n=np.ones(int(ok.sum()), dtype=np.int64),
            failed=output[ok] == 0,
            prefix_hashes=None,
            problems=first_per_line(problems),
        )
