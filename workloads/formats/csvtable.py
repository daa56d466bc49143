"""Reading CSV traces with pandas, vectorized, while keeping each row's line for messages.

Rows are read with blank lines kept (as all-missing rows) so that row i of the file is line i + 2;
blank rows are then dropped silently. Bytes that are not UTF-8 are read as U+FFFD so that the row
and column they sit in can be named; parsing such a value then fails with a message saying so.
"""
from __future__ import annotations

import re
from typing import Iterator

import numpy as np
import pandas as pd

from workloads.screen import Problem
from workloads.sources import NOT_UTF8, Source
from workloads.trace import TraceError

_REPLACED = "\ufffd"  # what encoding_errors="replace" puts for bytes that are not UTF-8


def require_columns(source: Source, columns: tuple[str, ...]) -> None:
    """Check that the header line names every column; the file must not be empty."""
    header = source.csv_header()
    if not header:
        expected = ",".join(columns)
        raise TraceError(source.display, 1, columns[0], f"the file is empty; expected {expected}")
    for name in columns:
        if name not in header:
            raise TraceError(
                source.display, 1, name, f"missing column; the header has {', '.join(header)}"
            )


def read_table(
    source: Source, columns: tuple[str, ...], text_columns: tuple[str, ...], chunk_rows: int | None
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """Yield (frame of the columns, line of each row), blank lines left out.

    text_columns are kept as text; pandas infers the others, so that clean integer columns
    arrive as int64 with no per-value conversion.
    """
    with source.open() as handle:
        try:
            table = pd.read_csv(
                handle,
                usecols=list(columns),
                dtype=dict.fromkeys(text_columns, str),
                skip_blank_lines=False,
                skipinitialspace=True,
                encoding="utf-8-sig",
                encoding_errors="replace",
                chunksize=chunk_rows,
            )
            chunks = [table] if chunk_rows is None else table
            first_row = 0
            rows = 0
            for frame in chunks:
                lines = np.arange(first_row + 2, first_row + 2 + len(frame), dtype=np.int64)
                first_row += len(frame)
                blank = frame.isna().all(axis=1).to_numpy()
                if blank.any():
                    frame, lines = frame[~blank], lines[~blank]
                rows += len(frame)
                yield frame, lines
        except pd.errors.ParserError as exc:
            line, detail = _parser_error(str(exc))
            raise TraceError(source.display, line, "(row)", f"unreadable CSV: {detail}") from None
    if rows == 0:
        raise TraceError(source.display, 2, columns[0], "no requests after the header")


def int_column(
    frame: pd.DataFrame, column: str, lines: np.ndarray, problems: list[Problem]
) -> tuple[np.ndarray, np.ndarray]:
    """(values as int64 with 0 where unreadable, mask of unreadable rows); records why."""
    if frame[column].dtype.kind in "iu":
        values = frame[column].to_numpy(dtype=np.int64)
        return values, np.zeros(len(values), dtype=bool)
    numbers = _numbers(frame[column])
    whole = np.isfinite(numbers) & (numbers == np.round(numbers))
    record_problems(frame[column], ~whole, "not a whole number", column, lines, problems)
    return np.where(whole, numbers, 0).astype(np.int64), ~whole


def float_column(
    frame: pd.DataFrame, column: str, lines: np.ndarray, problems: list[Problem]
) -> tuple[np.ndarray, np.ndarray]:
    """(values as float64 with 0 where unreadable, mask of unreadable rows); records why."""
    numbers = _numbers(frame[column])
    finite = np.isfinite(numbers)
    record_problems(frame[column], ~finite, "not a number", column, lines, problems)
    return np.where(finite, numbers, 0.0), ~finite


def first_per_line(problems: list[Problem]) -> list[Problem]:
    """Keep one Problem a line: the first recorded, i.e. the leftmost column checked."""
    first: dict[int, Problem] = {}
    for problem in problems:
        first.setdefault(problem.line, problem)
    return list(first.values())


def record_problems(
    cells: pd.Series, bad: np.ndarray, reason: str, column: str, lines: np.ndarray,
    problems: list[Problem],
) -> None:
    """Add a Problem for each bad row, naming missing values and non-UTF-8 bytes as such."""
    if not bad.any():
        return
    values = cells.to_numpy(dtype=object)
    missing = cells.isna().to_numpy()
    for i in np.flatnonzero(bad).tolist():
        value = values[i]
        if missing[i]:
            problems.append(Problem(int(lines[i]), column, "missing value", None))
        elif isinstance(value, str) and _REPLACED in value:
            problems.append(Problem(int(lines[i]), column, NOT_UTF8, value))
        else:
            problems.append(Problem(int(lines[i]), column, reason, value))


def _numbers(column: pd.Series) -> np.ndarray:
    if column.dtype.kind not in "iuf":
        column = pd.to_numeric(column, errors="coerce")
    return column.to_numpy(dtype=np.float64, na_value=np.nan)


def _parser_error(message: str) -> tuple[int, str]:
    """(1-based line, detail) of a pandas ParserError, whose "row" counts from 0 and "line"
    from 1, both including the header."""
    detail = message.split("C error: ", 1)[-1]
    found = re.search(r"\b(row|line) (\d+)", detail)
    if found is None:
        return 1, detail
    return int(found.group(2)) + (found.group(1) == "row"), detail
