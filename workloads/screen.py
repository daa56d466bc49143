"""Screening parsed rows: the value and order checks every format shares, and skip_invalid.

A format reader turns a stretch of its file into `Rows` (parsed columns plus the rows it could not
parse at all, as `Problem`s). `Screen` then applies the checks of the canonical schema, vectorized,
and either raises a TraceError for the first bad line or drops bad rows and remembers them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from workloads.trace import NO_VALUE, SKIP_HINT, TraceError


@dataclass(frozen=True)
class Problem:
    """Why one line of a file is not a valid request."""

    line: int
    field: str
    reason: str
    value: object = NO_VALUE


@dataclass(frozen=True)
class Rows:
    """Requests parsed from one stretch of a file, in file order; the arrays share one length."""

    lines: np.ndarray  # int64: the 1-based line of each row in its file
    time_s: np.ndarray  # float64: arrival in the file's own clock (any origin)
    time_raw: object  # the arrival as written in the file, for messages (array or list)
    prompt_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64
    n: np.ndarray  # int64
    failed: np.ndarray  # bool
    prefix_hashes: list | None  # one tuple of ints per row, or None for formats without hashes
    problems: list[Problem] = field(default_factory=list)  # unparsable lines, already left out

    def select(self, keep: np.ndarray) -> Rows:
        """The rows where keep is True (problems are kept as they are)."""
        hashes = None
        if self.prefix_hashes is not None:
            hashes = [h for h, k in zip(self.prefix_hashes, keep.tolist()) if k]
        return replace(
            self,
            lines=self.lines[keep],
            time_s=self.time_s[keep],
            time_raw=np.asarray(self.time_raw, dtype=object)[keep],
            prompt_tokens=self.prompt_tokens[keep],
            output_tokens=self.output_tokens[keep],
            n=self.n[keep],
            failed=self.failed[keep],
            prefix_hashes=hashes,
        )


class Screen:
    """Checks successive Rows of one file; carries the arrival order across them."""

    def __init__(
        self, path: str, fields: dict[str, str], *, skip_invalid: bool,
        skipped: list[tuple[int, str]] | None = None,
    ) -> None:
        self.path = path
        self.fields = fields  # canonical name ("time_s", "prompt_tokens", ...) -> file's name
        self.skip_invalid = skip_invalid
        # (line, reason) of each dropped row, appended to the caller's list when it gives one
        self.skipped: list[tuple[int, str]] = [] if skipped is None else skipped
        self._latest_s = -np.inf

    def __call__(self, rows: Rows) -> Rows:
        """The valid rows; raises TraceError on the first invalid line unless skip_invalid."""
        problems = list(rows.problems)
        bad = self._value_problems(rows, problems)
        if bad.any():
            rows = rows.select(~bad)
        late = self._order_problems(rows, problems)
        if late.any():
            rows = rows.select(~late)
        if len(rows.time_s):
            self._latest_s = max(self._latest_s, float(rows.time_s.max()))
        problems.sort(key=lambda p: p.line)
        if problems and not self.skip_invalid:
            first = problems[0]
            raise TraceError(
                self.path, first.line, first.field, first.reason, first.value, hint=SKIP_HINT
            )
        self.skipped.extend((p.line, f"{p.field}: {p.reason}") for p in problems)
        return replace(rows, problems=[])

    def _value_problems(self, rows: Rows, problems: list[Problem]) -> np.ndarray:
        checks = (
            ("prompt_tokens", rows.prompt_tokens < 1, "must be >= 1"),
            (
                "output_tokens",
                (rows.output_tokens < 0) | ((rows.output_tokens == 0) & ~rows.failed),
                "must be >= 1 (0 only for a failed response)",
            ),
            ("n", rows.n < 1, "must be >= 1"),
        )
        bad = np.zeros(len(rows.lines), dtype=bool)
        for name, mask, reason in checks:
            new = mask & ~bad
            values = getattr(rows, name)
            field = self.fields[name]
            for i in np.flatnonzero(new).tolist():
                problems.append(Problem(int(rows.lines[i]), field, reason, int(values[i])))
            bad |= new
        return bad

    def _order_problems(self, rows: Rows, problems: list[Problem]) -> np.ndarray:
        # A row is late when it arrives before some earlier row; dropping late rows leaves the
        # running maximum unchanged, so one pass finds every row skip_invalid has to drop.
        earlier = np.maximum.accumulate(np.concatenate(([self._latest_s], rows.time_s)))[:-1]
        late = rows.time_s < earlier
        raw = np.asarray(rows.time_raw, dtype=object)
        for i in np.flatnonzero(late).tolist():
            reason = (
                f"arrives {earlier[i] - rows.time_s[i]:.6g} s before an earlier row; "
                "a trace must be in arrival order"
            )
            problems.append(Problem(int(rows.lines[i]), self.fields["time_s"], reason, raw[i]))
        return late
