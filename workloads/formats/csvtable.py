"""Reading CSV traces with pandas, vectorized, while keeping each row's line for messages.

Rows are read with blank lines kept (as all-missing rows) so that row i of the file is line i + 2;
blank rows are then dropped silently. Bytes that are not UTF-8 are read as U+FFFD so that the row
and column they sit in can be named; parsing such a value then fails with a message saying so.

Field counts. A row with more fields than the header is invalid (its values cannot be matched to
columns). pandas reads every column so that it notices such rows at all, skips them with a warning
naming their line, and those warnings become Problems; the lines of the rows after a skipped one
step over it. pandas would instead take a longer first data row as an index column, so rows like
that right after the header are found with the csv module and not given to pandas. A trailing
comma ("1,2,3,") adds an empty field, so such a row is too long unless the header has one too.
"""
from __future__ import annotations

import csv
import io
import re
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from workloads.screen import Problem
from workloads.sources import NOT_UTF8, Source
from workloads.trace import TraceError

_REPLACED = "\ufffd"  # what encoding_errors="replace" puts for bytes that are not UTF-8
_SKIPPED = re.compile(r"Skipping line (\d+): expected (\d+) fields, saw (\d+)")


@dataclass(frozen=True)
class Table:
    """One stretch of a CSV file: the wanted columns, each row's line, and the rows left out."""

    frame: pd.DataFrame
    lines: np.ndarray  # int64, one per row of frame
    problems: list[Problem]  # rows with more fields than the header, already left out


def require_columns(source: Source, columns: tuple[str, ...]) -> None:
    """Check that the header line names every column once; the file must not be empty."""
    header = source.csv_header()
    if not header:
        expected = ",".join(columns)
        raise TraceError(source.display, 1, columns[0], f"the file is empty; expected {expected}")
    for name in columns:
        if name not in header:
            raise TraceError(
                source.display, 1, name, f"missing column; the header has {', '.join(header)}"
            )
        if header.count(name) > 1:
            raise TraceError(source.display, 1, name, "the header names this column twice")


def read_table(
    source: Source, columns: tuple[str, ...], text_columns: tuple[str, ...], chunk_rows: int | None
) -> Iterator[Table]:
    """Yield the file as Tables of the wanted columns, blank lines left out.

    text_columns are kept as text; pandas infers the other wanted columns, so that clean integer
    columns arrive as int64 with no per-value conversion. Call require_columns first.
    """
    header = source.csv_header()
    # Other columns get placeholder names (a header may repeat or leave out their names) and are
    # read as categories, which costs little for the few distinct values they tend to hold.
    names = [name if name in columns else f"(column {i + 1})" for i, name in enumerate(header)]
    leading = _leading_long_rows(source, header)
    dtypes = {name: "category" for name in names if name not in columns}
    dtypes.update(dict.fromkeys(text_columns, str))
    with source.open() as handle:
        try:
            chunks, caught = _quietly(
                lambda: pd.read_csv(
                    handle,
                    names=names,
                    header=0,
                    index_col=False,
                    dtype=dtypes,
                    skiprows=range(1, 1 + len(leading)),
                    skip_blank_lines=False,
                    skipinitialspace=True,
                    encoding="utf-8-sig",
                    encoding_errors="replace",
                    on_bad_lines="warn",
                    chunksize=chunk_rows,
                )
            )
            if chunk_rows is None:
                chunks = iter([chunks])
            lines = _LineCounter(source.display, header, columns, 2 + len(leading), leading)
            lines.note(caught)
            rows = 0
            while True:
                frame, caught = _quietly(lambda: next(chunks, None))
                lines.note(caught)
                if frame is None:
                    break
                table = lines.table(frame, last=chunk_rows is None)
                rows += len(table.frame)
                yield table
        except pd.errors.ParserError as exc:
            line, detail = _parser_error(str(exc))
            raise TraceError(source.display, line, "(row)", f"unreadable CSV: {detail}") from None
    if lines.pending:
        yield lines.table(pd.DataFrame({name: [] for name in names}), last=True)
    if rows == 0:
        raise TraceError(source.display, 2, columns[0], "no requests after the header")


class _LineCounter:
    """The line of each row pandas returns, given the lines it skipped; and their Problems."""

    def __init__(
        self, path: str, header: list[str], columns: tuple[str, ...], first_line: int,
        leading: list[Problem],
    ) -> None:
        self.path = path
        self.header = header
        self.columns = list(columns)
        self.next_line = first_line  # the line of the next row pandas returns, if not skipped
        self.skipped: list[int] = []  # lines pandas skipped, at or after next_line, ascending
        self.pending = list(leading)  # Problems not yet handed over with a Table

    def note(self, caught: list[str]) -> None:
        """Take in the ParserWarnings pandas gave while reading."""
        for message in caught:
            found = list(_SKIPPED.finditer(message))
            if not found:
                raise TraceError(self.path, self.next_line, "(row)", f"unreadable CSV: {message}")
            for match in found:
                line, saw = int(match.group(1)), int(match.group(3))
                self.skipped.append(line)
                self.pending.append(_long_row(line, self.header, saw))
        self.skipped.sort()

    def table(self, frame: pd.DataFrame, *, last: bool) -> Table:
        """The wanted columns of frame with the line of each row, minus blank rows, and the
        Problems up to its end (all that are left when it is the last)."""
        lines = np.arange(self.next_line, self.next_line + len(frame), dtype=np.int64)
        for line in self.skipped:
            lines[lines >= line] += 1
        if len(lines):
            self.next_line = int(lines[-1]) + 1
        self.skipped = [line for line in self.skipped if line >= self.next_line]
        # A Problem after this Table's last row waits for the Table holding the rows before it,
        # so that the first invalid line of the file is the first one reported.
        due = [p for p in self.pending if last or p.line < self.next_line]
        self.pending = [p for p in self.pending if not (last or p.line < self.next_line)]
        blank = frame.isna().all(axis=1).to_numpy()
        frame = frame[self.columns]
        if blank.any():
            frame, lines = frame[~blank], lines[~blank]
        return Table(frame, lines, due)


def _quietly(call: Callable[[], object]) -> tuple[object, list[str]]:
    """call(), and the texts of the ParserWarnings it gave; other warnings are given on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        result = call()
    messages = []
    for warning in caught:
        if issubclass(warning.category, pd.errors.ParserWarning):
            messages.append(str(warning.message))
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return result, messages


def _leading_long_rows(source: Source, header: list[str]) -> list[Problem]:
    """Problems for the rows right after the header with more fields than it (see module doc)."""
    problems: list[Problem] = []
    with source.open() as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="replace", newline="")
        records = csv.reader(text, skipinitialspace=True)
        line = 1  # the line being read; pandas counts a record (quoted line breaks and all) as one
        try:
            next(records, None)
            line = 2
            for record in records:
                if len(record) <= len(header):
                    break
                problems.append(_long_row(line, header, len(record), record[len(header)]))
                line += 1
        except csv.Error as exc:
            raise TraceError(source.display, line, "(row)", f"unreadable CSV: {exc}") from None
    return problems


def _long_row(line: int, header: list[str], saw: int, extra: object = None) -> Problem:
    reason = f"the row has {saw} fields, the header {len(header)} ({', '.join(header)})"
    if extra is None:
        return Problem(line, f"(field {len(header) + 1})", reason)
    return Problem(line, f"(field {len(header) + 1})", reason, extra)


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
