"""Shared by the JSON readers: decoding with errors that name line and field, typed field access,
and a buffer that collects parsed requests into `Rows`.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np

from workloads.screen import Problem, Rows
from workloads.sources import NOT_UTF8

_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:')
_CUT_KEY = re.compile(r'[{,]\s*"((?:[^"\\]|\\.)*)$')


def field_at(text: str, pos: int) -> str:
    """The field a broken JSON text was in at pos: the key the text ends in, cut short, if pos is
    at or after its opening quote; else the last key written before pos."""
    cut = _CUT_KEY.search(text.rstrip())
    # An empty key (a text cut right after a quote) names nothing a user could look for.
    if cut is not None and cut.start(1) - 1 <= pos and cut.group(1):
        return cut.group(1)
    keys = [key for key in _KEY.findall(text, 0, pos) if key]
    return keys[-1] if keys else "(line)"


def parse_line(raw: bytes, line: int) -> object | Problem:
    """One JSON value from one line of bytes, or the Problem that stops it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8", errors="replace")
        return Problem(
            line, field_at(before, len(before)), NOT_UTF8,
            raw[exc.start : exc.start + 8],
        )
    text = text.rstrip()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        return Problem(
            line, field_at(text, exc.pos),
            f"invalid JSON at column {exc.colno}: {exc.msg}", text[-40:].strip(),
        )


def whole_number(value: object) -> int | None:
    """An int from a JSON integer or integral float; None for anything else (bools included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def finite_number(value: object) -> float | None:
    """A float from a JSON number; None for anything else (bools, NaN, infinities included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class RowBuffer:
    """Parsed requests and unparsable lines, until they are taken as one `Rows`."""

    def __init__(self, *, hashed: bool) -> None:
        self.hashed = hashed
        self._clear()

    def __len__(self) -> int:
        return len(self.lines)

    def add(
        self, line: int, time_s: float, time_raw: object, prompt_tokens: int, output_tokens: int,
        hashes: tuple[int, ...] | None = None,
    ) -> None:
        self.lines.append(line)
        self.time_s.append(time_s)
        self.time_raw.append(time_raw)
        self.prompt_tokens.append(prompt_tokens)
        self.output_tokens.append(output_tokens)
        self.hashes.append(hashes)

    def take(self) -> Rows:
        """Everything collected so far, as Rows; the buffer starts empty again."""
        count = len(self.lines)
        output = np.array(self.output_tokens, dtype=np.int64)
        rows = Rows(
            lines=np.array(self.lines, dtype=np.int64),
            time_s=np.array(self.time_s, dtype=np.float64),
            time_raw=self.time_raw,
            prompt_tokens=np.array(self.prompt_tokens, dtype=np.int64),
            output_tokens=output,
            n=np.ones(count, dtype=np.int64),
            failed=np.zeros(count, dtype=bool),
            prefix_hashes=self.hashes if self.hashed else None,
            problems=self.problems,
        )
        self._clear()
        return rows

    def _clear(self) -> None:
        self.lines: list[int] = []
        self.time_s: list[float] = []
        self.time_raw: list[object] = []
        self.prompt_tokens: list[int] = []
        self.output_tokens: list[int] = []
        self.hashes: list[tuple[int, ...] | None] = []
        self.problems: list[Problem] = []
